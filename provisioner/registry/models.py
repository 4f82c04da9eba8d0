"""The registry's data, as plain immutable dataclasses.

Everything here is validated (``load.py`` with settings.py, hostvars.py and agencies.py)
before it is built, so the rest of the package can trust these values (hostnames are
valid DNS names, paths are absolute, no field holds characters that could break a
generated config).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Mapping

DELIVERY_COMPONENTS: tuple[str, ...] = (
    "persyaratan",
    "prosedur",
    "jangka_waktu",
    "biaya",
    "produk",
    "pengaduan",
)
"""The six service-delivery components (PermenPANRB 15/2014) every service must publish."""

MANAGEMENT_COMPONENTS: tuple[str, ...] = (
    "dasar_hukum",
    "sarana",
    "kompetensi",
    "pengawasan",
    "jumlah_pelaksana",
    "jaminan_pelayanan",
    "jaminan_keamanan",
    "evaluasi_kinerja",
)
"""The eight internal-management components (UU 25/2009 art. 21), optional to publish."""

LAPOR_CHANNEL_NAME = "SP4N-LAPOR!"

TLS_MODES = ("http-01", "dns-01-wildcard")
RENEW_DAYS = 30  # certificates expiring within this many days are renewed
ALERT_CERT_DAYS = 21
"""A certificate this close to expiry is alerted: the sweep's warning threshold
(sweep.EXPIRY_WARN_DAYS), nine days after renewal should have replaced it. Alerting at
RENEW_DAYS would announce every certificate on the day the daily renewal takes it."""
RECORD_TYPES = ("A", "CNAME")


@dataclass(frozen=True)
class ComplaintChannel:
    name: str
    contact: str
    url: str | None = None


@dataclass(frozen=True)
class Head:
    name: str
    title: str


@dataclass(frozen=True)
class Service:
    name: str
    slug: str
    description: str
    # Each delivery/management component is a list of paragraphs or list items.
    components: dict[str, tuple[str, ...]]
    management: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Agency:
    slug: str
    name: str
    short_name: str
    subdomain: str
    fqdn: str
    host: str | None  # inventory host name, None when external
    external_url: str | None
    description: str
    address: str
    phone: str
    email: str
    opening_hours: tuple[str, ...]  # this and the rest below: empty for an external agency
    head: Head | None  # None: an external agency that gave none
    maklumat: str
    complaint_channels: tuple[ComplaintChannel, ...]
    services: tuple[Service, ...]  # at least one for an agency hosted here
    sample: bool
    offboarded: bool
    record_type: str  # "A" or "CNAME"
    source: Path  # the YAML file it came from
    content_access: tuple[str, ...] = ()  # SFTP public key lines (registry-validated)

    @property
    def hosted(self) -> bool:
        return self.host is not None and not self.offboarded


@dataclass(frozen=True)
class SshdSettings:
    """Where a host's sshd reads provisioner's SFTP drop-in and keys, and how it is tested
    and reloaded. The defaults are Debian's; a reload is SIGHUP to the pid in
    ``pid_file`` (what ``systemctl reload ssh`` does after its own ``sshd -t``)."""

    binary: PurePosixPath = PurePosixPath("/usr/sbin/sshd")
    main_config: PurePosixPath = PurePosixPath("/etc/ssh/sshd_config")
    config_dir: PurePosixPath = PurePosixPath("/etc/ssh/sshd_config.d")
    keys_dir: PurePosixPath = PurePosixPath("/etc/ssh/provisioner-keys")
    pid_file: PurePosixPath = PurePosixPath("/run/sshd.pid")

    @property
    def drop_in(self) -> PurePosixPath:
        return self.config_dir / "provisioner-sftp.conf"


@dataclass(frozen=True)
class Host:
    """A web hosting server from hosts.yml (paths are absolute, resolved)."""

    name: str
    ssh_address: str
    ssh_port: int
    ssh_user: str
    ssh_key_file: Path
    public_ipv4: str
    public_ipv6: str | None
    fqdn: str | None  # the host's own DNS name, target of CNAME records
    nginx_binary: str
    nginx_main_config: Path
    nginx_sites_dir: Path
    web_root: Path
    acme_webroot: Path
    tls_dir: Path
    log_dir: Path
    lab: bool
    sshd: SshdSettings = SshdSettings()  # where agencies' SFTP accounts are configured


@dataclass(frozen=True)
class Nameserver:
    name: str
    address: str
    port: int = 53


RATE_LIMIT_KINDS = (
    "certificates_per_registered_domain",
    "new_orders_per_account",
    "failed_validations_per_hostname",
)


@dataclass(frozen=True)
class RateLimit:
    """One limit of the CA: at most ``limit`` events of ``kind`` per key in ``hours``.

    ``renewals_exempt``: a renewal (the same names again) may be ordered even when the
    limit is reached (Let's Encrypt does so for certificates per registered domain)."""

    kind: str  # one of RATE_LIMIT_KINDS
    limit: int
    hours: float
    renewals_exempt: bool = False


LETS_ENCRYPT_LIMITS: tuple[RateLimit, ...] = (
    RateLimit("certificates_per_registered_domain", 50, 168, renewals_exempt=True),
    RateLimit("new_orders_per_account", 300, 3),
    RateLimit("failed_validations_per_hostname", 5, 1),
)
"""Let's Encrypt's published limits, the default of ``acme_rate_limits``."""

MAX_PARALLEL_ORDERS = 4  # default of acme_max_parallel_orders


@dataclass(frozen=True)
class AcmeSettings:
    directory: str
    contact: str
    ca_bundle: Path | None  # trust for the ACME API's own TLS (Pebble's), None: system store
    revoke_on_offboard: bool
    max_parallel_orders: int = MAX_PARALLEL_ORDERS
    rate_limits: tuple[RateLimit, ...] = LETS_ENCRYPT_LIMITS
    caa_identity: str | None = None  # the CA's CAA domain; None: letsencrypt.org for its URLs


@dataclass(frozen=True)
class LabSettings:
    dir: Path
    ns1: str
    ns2: str
    acme: str
    acme_port: int
    pdns: str | None = None  # a PowerDNS primary of the same zone (the second DNS flavour)
    # Hosts the lab runs production-shaped: their own mount namespace, where the
    # inventory's /etc/nginx, /var/www, ... paths are lab folders.
    production_hosts: tuple[str, ...] = ()


SMTP_SECURITY = ("starttls", "tls")  # STARTTLS on a plain port, or TLS from the first byte


@dataclass(frozen=True)
class EmailSettings:
    host: str
    port: int
    security: str  # one of SMTP_SECURITY
    username: str | None
    password_file: Path | None  # 0600, read only when sending
    sender: str
    to: tuple[str, ...]  # ops: the alerts
    report_to: tuple[str, ...]  # leadership: the weekly report
    ca_bundle: Path | None  # trust for the SMTP server's certificate, None: system store


@dataclass(frozen=True)
class WebhookSettings:
    url: str  # may itself carry a token: never printed


@dataclass(frozen=True)
class TelegramSettings:
    api_base: str
    bot_token_file: Path  # 0600, read only when sending
    chat_id: str


@dataclass(frozen=True)
class AlertSettings:
    """Where alerts on change go (each channel optional) and when a certificate is due."""

    email: EmailSettings | None
    webhook: WebhookSettings | None
    telegram: TelegramSettings | None
    cert_days: int  # a certificate expiring within this many days is alerted once (21)


@dataclass(frozen=True)
class BackupSettings:
    """The restic repository, the 0600 file with its password, and what retention keeps."""

    repository: Path
    password_file: Path
    retention: Mapping[str, int]  # restic --keep-<period>: daily, weekly, monthly, yearly


@dataclass(frozen=True)
class Settings:
    """Group vars: the zone and how to reach its DNS, ACME and hosts."""

    inventory_id: str
    zone: str
    primary: Nameserver
    nameservers: tuple[Nameserver, ...]
    tsig_key_file: Path
    record_ttl: int
    acme: AcmeSettings
    tls_mode: str
    trust_roots: tuple[Path, ...]  # extra CA roots the verifier trusts (lab: Pebble's root)
    known_hosts_file: Path
    max_change_ratio: float  # safety gate on updates/deletes of owned records
    lab: LabSettings | None
    alerts: AlertSettings | None = None  # no alerts block: no alerts
    verify_allow_private: bool = False  # external agencies may be on loopback/private addresses
    backup: BackupSettings | None = None  # no backup block: 'provisioner backup' refuses


@dataclass(frozen=True)
class Inventory:
    root: Path
    state_dir: Path
    settings: Settings
    hosts: dict[str, Host]
    agencies: dict[str, Agency]  # by slug, in file-name order

    def select(self, slugs: list[str] | tuple[str, ...], *, all_: bool = False) -> list[Agency]:
        """Agencies named on the command line (or all active ones); unknown names raise."""
        from ..errors import UsageError

        if all_:
            return [a for a in self.agencies.values() if not a.offboarded]
        missing = [s for s in slugs if s not in self.agencies]
        if missing:
            raise UsageError(
                f"unknown agency {', '.join(missing)}",
                hint="run 'provisioner registry list' to see the slugs",
            )
        return [self.agencies[s] for s in slugs]
