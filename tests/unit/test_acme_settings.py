"""The ACME etiquette settings in group_vars/all.yml: orders at once and the CA's limits."""

from __future__ import annotations

import re
from typing import Any

import pytest

from provisioner.registry import load as registry
from provisioner.registry.models import LETS_ENCRYPT_LIMITS, MAX_PARALLEL_ORDERS, RateLimit

from .conftest import SampleInventory, tree_digest


def load_with(sample: SampleInventory, **settings: Any):
    data = sample.read("group_vars/all.yml")
    data.pop("acme_rate_limits")  # the lab sample turns them off (Pebble has none)
    data.pop("acme_max_parallel_orders")  # and lets 16 orders fly
    data.update(settings)
    sample.write("group_vars/all.yml", data)
    return registry.load_inventory(sample.root, sample.state_dir).settings.acme


def test_defaults_are_lets_encrypts_limits_and_four_orders(sample: SampleInventory):
    acme = load_with(sample)
    assert acme.max_parallel_orders == MAX_PARALLEL_ORDERS == 4
    assert acme.rate_limits == LETS_ENCRYPT_LIMITS
    assert [(r.kind, r.limit, r.hours) for r in LETS_ENCRYPT_LIMITS] == [
        ("certificates_per_registered_domain", 50, 168),
        ("new_orders_per_account", 300, 3),
        ("failed_validations_per_hostname", 5, 1),
    ]


def test_the_lab_sample_turns_the_limits_off(sample: SampleInventory):
    assert registry.load_inventory(sample.root, sample.state_dir).settings.acme.rate_limits == ()


def test_limits_are_configurable_and_can_be_turned_off(sample: SampleInventory):
    acme = load_with(sample, acme_max_parallel_orders=2, acme_rate_limits={
        "certificates_per_registered_domain": {"limit": 20, "hours": 24,
                                               "renewals_exempt": False},
        "new_orders_per_account": False,
    })
    assert acme.max_parallel_orders == 2
    assert acme.rate_limits == (
        RateLimit("certificates_per_registered_domain", 20, 24.0, False),
        RateLimit("failed_validations_per_hostname", 5, 1.0, False),
    )


@pytest.mark.parametrize("settings,field,fragment", [
    ({"acme_max_parallel_orders": 0}, "acme_max_parallel_orders", "from 1 to 16"),
    ({"acme_max_parallel_orders": 64}, "acme_max_parallel_orders", "from 1 to 16"),
    ({"acme_max_parallel_orders": "4"}, "acme_max_parallel_orders", "from 1 to 16"),
    ({"acme_rate_limits": [50]}, "acme_rate_limits", "mapping of limits"),
    ({"acme_rate_limits": {"certs_per_domain": {"limit": 5}}},
     "acme_rate_limits.certs_per_domain", "unknown key"),
    ({"acme_rate_limits": {"new_orders_per_account": {"limit": 0}}},
     "acme_rate_limits.new_orders_per_account.limit", "at least 1"),
    ({"acme_rate_limits": {"new_orders_per_account": {"hours": -3}}},
     "acme_rate_limits.new_orders_per_account.hours", "number of hours"),
    ({"acme_rate_limits": {"new_orders_per_account": 300}},
     "acme_rate_limits.new_orders_per_account", "or false"),
])
def test_bad_settings_name_the_field(sample: SampleInventory, settings: dict, field: str,
                                     fragment: str):
    data = sample.read("group_vars/all.yml")
    data.update(settings)
    path = sample.write("group_vars/all.yml", data)
    before = tree_digest(sample.root)
    result = sample.cli("registry", "check")
    assert result.exit_code == 2, result.stdout + result.stderr
    line = next((l for l in result.stderr.splitlines()
                 if re.match(rf"error: {re.escape(str(path))}(:\d+)?: {re.escape(field)}: ", l)),
                None)
    assert line is not None and fragment in line, result.stderr
    assert tree_digest(sample.root) == before
