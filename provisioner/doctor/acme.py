"""The doctor's ACME checks: the directory answers, the account exists (asked with
onlyReturnExisting, so nothing is registered), staging or production."""

from __future__ import annotations

from ..errors import ProvisionerError
from ..registry.models import Inventory
from ..tls.acme import AcmeAccount, existing_account, fetch_directory
from .checks import Check, environment_check, error_check


def check_acme(inventory: Inventory) -> list[Check]:
    acme = inventory.settings.acme
    checks = [environment_check(acme.directory, inventory.settings.lab is not None)]
    try:
        directory = fetch_directory(acme)
    except ProvisionerError as exc:
        return [*checks, error_check("acme_directory", acme.directory, exc,
                                     "check acme_directory and that the CA is reachable"),
                Check("acme_account", acme.directory, "skip",
                      "not checked: the directory does not answer")]
    checks.append(Check("acme_directory", acme.directory, "pass",
                        f"answers; new orders at {directory['newOrder']}"))
    checks.append(account_check(inventory))
    return checks


def account_check(inventory: Inventory) -> Check:
    acme = inventory.settings.acme
    key_file = AcmeAccount(inventory.settings, inventory.state_dir).key_file
    if not key_file.exists():
        return Check("acme_account", acme.directory, "warn",
                     "no account key yet: the first certificate order registers the account",
                     "onboard the first agency (on staging first)")
    try:
        uri = existing_account(acme, key_file)
    except ProvisionerError as exc:
        return error_check("acme_account", acme.directory, exc)
    if uri is None:
        return Check("acme_account", acme.directory, "warn",
                     f"the CA does not know the key in {key_file}: the next order "
                     "registers it again", "nothing to do, unless the account was revoked")
    return Check("acme_account", acme.directory, "pass", f"account {uri}")
