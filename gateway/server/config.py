"""The node's TOML configuration: parsed strictly, every mistake named by its key.

Every key is in ``docs/configuration.md`` (a test keeps it in step with this parser);
``customs-gateway config example`` prints an annotated config. In short (paths are relative to
the config file)::

    jurisdiction = "HK"
    name = "gateway"                  # the node's holder name: spiffe://hk.customs-exchange/node/gateway
    listen = "127.0.0.1:7002"
    data_dir = "data"

    [tls]
    certificate = "certs/node.pem"
    key = "certs/node.key"
    trust_bundle = "certs/bundle.json"
    crls = ["certs/cn.crl", "certs/hk.crl", "certs/mo.crl"]   # optional; each must exist

    [signing]
    certificate = "certs/node-signing.pem"
    key = "certs/node-signing.key"

    [[peers]]
    jurisdiction = "CN"
    address = "127.0.0.1:7001"        # or address_file = "../cn/data/listen-address"
                                      # or addresses = [...] / address_files = [...]: replicas
    name = "gateway"                  # optional, the default

    [server]                          # optional, defaults shown
    grace_seconds = 5.0
    max_workers = 32
    expiry_warning_days = 14
    checkpoint_interval_seconds = 10.0
    tls_reload_seconds = 2.0          # how often TLS files and CRLs are checked for changes
    retention_sweep_seconds = 60.0    # how often payloads past retain_until are erased
    lease_seconds = 5.0               # replicas: a dead one's singletons move after this
    pin_python_threads = true         # Python threads on one CPU at a time (ADR 0086)

    [delivery]                        # optional, defaults shown (docs/operations.md)
    retry_base_seconds = 0.05         # first retry after a failure, doubling each time...
    retry_cap_seconds = 5.0           # ...up to this, with full jitter
    failure_summary_seconds = 600.0   # while a peer stays down: one summary log line this often

    [metrics]                         # optional: Prometheus metrics over HTTPS, client
    listen = "127.0.0.1:9464"         # certificates required (role monitor, own jurisdiction)

    [limits]                          # optional; budgets default to shares of max_workers
    calls = 16                        # unary calls at once (all callers), outside the reserve
    calls_per_caller = 8              # unary calls at once of one certificate identity
    reserved_calls = 4                # for Health/Check and PeerExchange only
    inbound_streams = 8               # StreamInbound streams at once (all partners)
    other_streams = 4                 # Health/Watch and reflection streams at once (anyone)
    streams_per_caller = 4            # streams at once of one certificate identity
    stream_lifetime_seconds = 900.0   # a stream then ends UNAVAILABLE; resume from the cursor
    max_request_bytes = 4194304       # larger requests: RESOURCE_EXHAUSTED
    max_response_bytes = 16777216
    backlog = 64                      # calls queued for a thread beyond max_workers
    storage_probe_seconds = 2.0       # how often health checks that the ledger can commit
    bulk_entries = 1000               # entries in one bulk call (ADR 0053)
    bulk_bytes = 2097152              # serialized bytes of one bulk request

    [storage]                         # optional: absent means SQLite files in data_dir
    url = "postgresql://gateway@db.example:5432/customs_cn"   # replicas of one node share it
"""

from __future__ import annotations

import datetime as dt
import difflib
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gateway.errors import InvalidArgumentError
from gateway.pki.identity import IdentityError, Jurisdiction, Role, SpiffeId
from gateway.server.limits import COUNT_LIMITS, Limits
from gateway.store import StoreConfigError, check_url

__all__ = [
    "LISTEN_ADDRESS_FILE",
    "ConfigError",
    "DeliverySettings",
    "NodeConfig",
    "PeerConfig",
    "ServerSettings",
    "StorageSettings",
    "load_config",
]

# Written in the data directory once the port is bound: ``HOST:PORT`` and a newline, the port
# the node actually got (with ``listen = "...:0"``). Peers on the same machine read it through
# ``[[peers]] address_file`` (ADR 0060).
LISTEN_ADDRESS_FILE = "listen-address"

T = TypeVar("T")


class ConfigError(InvalidArgumentError):
    """A config file with a mistake; the message names the file, the key and the problem."""


@dataclass(frozen=True)
class PeerConfig:
    """Another jurisdiction's node this node delivers to and is witnessed by."""

    jurisdiction: Jurisdiction
    address: str  # HOST:PORT, or "" when the address is read from ``address_file``
    name: str = "gateway"
    address_file: Path | None = None  # a file holding HOST:PORT, re-read at every (re)connect
    # The replicas of one peer node (docs/operations.md, Deployment): calls go round robin to
    # those that are up and are retried on another one (gateway.transport.secure_channel).
    addresses: tuple[str, ...] = ()
    address_files: tuple[Path, ...] = ()

    @property
    def identity(self) -> SpiffeId:
        """The peer node's SPIFFE identity."""
        return SpiffeId(self.jurisdiction, Role.NODE, self.name)

    def targets(self) -> list[str]:
        """Every address to dial now (``HOST:PORT``): the configured ones, or what the address
        files hold at this moment. A missing or unreadable file is left out; when no file can
        be read, the one target is ``unix:<first file>``, which fails at once as UNAVAILABLE
        (the peer has not bound its port yet), named after the file so the failure says why."""
        if self.address:
            return [self.address]
        if self.addresses:
            return list(self.addresses)
        files = self.address_files or ((self.address_file,) if self.address_file else ())
        found: list[str] = []
        for file in files:
            try:
                found.append(_address(file.read_text(encoding="utf-8").strip()))
            except (OSError, UnicodeDecodeError, ValueError):
                continue
        return found or [f"unix:{files[0]}"]

    def target(self) -> str:
        """What :meth:`targets` gives, as one line (``HOST:PORT`` or several, comma-separated)."""
        return ",".join(self.targets())


@dataclass(frozen=True)
class ServerSettings:
    """Tunables with safe defaults."""

    grace_seconds: float = 5.0
    max_workers: int = 32
    expiry_warning_days: int = 14
    checkpoint_interval_seconds: float = 10.0
    tls_reload_seconds: float = 2.0
    retention_sweep_seconds: float = 60.0
    lease_seconds: float = (
        5.0  # replicas on PostgreSQL: a dead replica's singletons move after this
    )
    pin_python_threads: bool = True  # ``customs-gateway serve``: one CPU at a time (ADR 0086)


@dataclass(frozen=True)
class DeliverySettings:
    """Delivery retries and how failures are logged (``[delivery]``)."""

    retry_base_seconds: float = 0.05
    retry_cap_seconds: float = 5.0
    failure_summary_seconds: float = 600.0


@dataclass(frozen=True)
class StorageSettings:
    """Where the node's tables live (``[storage]``, ADR 0070): ``url`` None means SQLite files
    in the data directory (the embedded default), else a PostgreSQL database that replicas of
    this node share."""

    url: str | None = None


def _storage(top: _Reader) -> StorageSettings:
    table = top.sub("storage", required=False)
    url = None
    if "url" in table.table:
        try:
            url = check_url(table.take("url", str))
        except StoreConfigError as exc:
            raise table.error("url", str(exc).removeprefix("storage url ")) from None
    table.done()
    return StorageSettings(url)


def _delivery(top: _Reader) -> DeliverySettings:
    table = top.sub("delivery", required=False)
    d = DeliverySettings()
    settings = DeliverySettings(
        retry_base_seconds=table.take("retry_base_seconds", float, d.retry_base_seconds),
        retry_cap_seconds=table.take("retry_cap_seconds", float, d.retry_cap_seconds),
        failure_summary_seconds=table.take(
            "failure_summary_seconds", float, d.failure_summary_seconds
        ),
    )
    for key in ("retry_base_seconds", "retry_cap_seconds", "failure_summary_seconds"):
        if getattr(settings, key) <= 0:
            raise table.error(key, "must be positive")
    if settings.retry_cap_seconds < settings.retry_base_seconds:
        raise table.error("retry_cap_seconds", "must not be below retry_base_seconds")
    table.done()
    return settings


@dataclass(frozen=True)
class NodeConfig:
    """A node's configuration with every path resolved and every referenced file present."""

    source: Path
    jurisdiction: Jurisdiction
    name: str
    listen: str
    data_dir: Path
    tls_certificate: Path
    tls_key: Path
    trust_bundle: Path
    signing_certificate: Path
    signing_key: Path
    crls: tuple[Path, ...] = ()
    peers: tuple[PeerConfig, ...] = ()
    server: ServerSettings = field(default_factory=ServerSettings)
    metrics_listen: str | None = None  # HOST:PORT of the HTTPS metrics endpoint, if any
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    limits: Limits | None = None  # None: the defaults for server.max_workers
    storage: StorageSettings = field(default_factory=StorageSettings)

    @property
    def resolved_limits(self) -> Limits:
        """The limits in force (the defaults for ``server.max_workers`` if none were given)."""
        return self.limits or Limits.for_workers(self.server.max_workers)

    @property
    def identity(self) -> SpiffeId:
        """This node's SPIFFE identity."""
        return SpiffeId(self.jurisdiction, Role.NODE, self.name)


class _Reader:
    """Takes keys out of a TOML table, remembering the path for error messages."""

    def __init__(self, source: Path, table: dict[str, Any], prefix: str = "") -> None:
        self.source = source
        self.table = dict(table)
        self.prefix = prefix
        self.asked: set[str] = set()  # every key looked for: what a misspelling is compared to

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"config {self.source}: key '{self.prefix}{key}': {problem}")

    def take(self, key: str, kind: type[T], default: T | None = None) -> T:
        self.asked.add(key)
        if key not in self.table:
            if default is None:
                # A misspelt key is the likelier mistake than a forgotten one: say so.
                for typo in difflib.get_close_matches(key, self._unasked(), n=1):
                    raise self.error(typo, f"unknown key (did you mean '{self.prefix}{key}'?)")
                raise self.error(key, "is required")
            return default
        value = self.table.pop(key)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            expected = _KIND.get(kind, kind.__name__)
            raise self.error(key, f"must be {expected}, not {_KIND.get(type(value), 'that')}")
        return value

    def _unasked(self) -> list[str]:
        return [k for k in self.table if k not in self.asked]

    def parsed(self, key: str, parse: Callable[[str], T], default: str | None = None) -> T:
        text = self.take(key, str, default)
        try:
            return parse(text)
        except (InvalidArgumentError, ValueError) as exc:
            raise self.error(key, str(exc)) from None

    def file(self, key: str) -> Path:
        path = (self.source.parent / self.take(key, str)).resolve()
        if not path.is_file():
            raise self.error(key, f"file {path} does not exist")
        return path

    def sub(self, key: str, *, required: bool) -> _Reader:
        table = self.take(key, dict, None if required else {})
        return _Reader(self.source, table, f"{self.prefix}{key}.")

    def done(self) -> None:
        if self.table:
            key = sorted(self.table)[0]
            near = difflib.get_close_matches(key, sorted(self.asked), n=1)
            hint = f" (did you mean '{self.prefix}{near[0]}'?)" if near else ""
            raise self.error(key, f"unknown key{hint}")


# How a TOML value's type is named in a message ("must be an integer, not a string").
_KIND: dict[type, str] = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a table",
    dt.datetime: "a date-time",
    dt.date: "a date",
    dt.time: "a time",
}


def _address(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return text


# How a peer's address is given: one of these keys in its [[peers]] table.
_ADDRESS_KEYS = ("address", "address_file", "addresses", "address_files")


def _list_of(table: _Reader, key: str, parse: Callable[[str], T]) -> list[T]:
    """A non-empty list of strings under ``key``, each parsed by ``parse``."""
    items = table.take(key, list)
    if not items:
        raise table.error(key, "must list at least one")
    out: list[T] = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise table.error(
                f"{key}[{i}]", f"must be a string, not {_KIND.get(type(item), 'that')}"
            )
        try:
            out.append(parse(item))
        except ValueError as exc:
            raise table.error(f"{key}[{i}]", str(exc)) from None
    return out


def _name(text: str) -> str:
    try:
        SpiffeId(Jurisdiction.CN, Role.NODE, text)
    except IdentityError as exc:
        raise ValueError(str(exc)) from None
    return text


def load_config(path: str | Path) -> NodeConfig:
    """Read and check a node config.

    Raises:
        ConfigError: the file is missing, is not TOML, has an unknown or missing key, a value of
            the wrong type, or names a file that does not exist. One line, naming the key.
    """
    source = Path(path).resolve()
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config {source}: file does not exist") from None
    except OSError as exc:  # a directory, no permission
        raise ConfigError(f"config {source}: cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config {source}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {source}: not valid TOML: {exc}") from None
    top = _Reader(source, raw)
    jurisdiction = top.parsed("jurisdiction", Jurisdiction.parse)
    name = top.parsed("name", _name, "gateway")
    listen = top.parsed("listen", _address)
    data_dir = (source.parent / top.take("data_dir", str)).resolve()

    tls = top.sub("tls", required=True)
    tls_certificate, tls_key, bundle = (
        tls.file("certificate"),
        tls.file("key"),
        tls.file("trust_bundle"),
    )
    crl_names = tls.take("crls", list, [])
    crls: list[Path] = []
    for i, item in enumerate(crl_names):
        if not isinstance(item, str):
            raise tls.error(f"crls[{i}]", "must be a string path")
        crls.append((source.parent / item).resolve())
    tls.done()

    signing = top.sub("signing", required=True)
    signing_certificate, signing_key = signing.file("certificate"), signing.file("key")
    signing.done()

    peers: list[PeerConfig] = []
    for i, item in enumerate(top.take("peers", list, [])):
        if not isinstance(item, dict):
            raise top.error(f"peers[{i}]", "must be a table ([[peers]])")
        peer = _Reader(source, item, f"peers[{i}].")
        peer_jurisdiction = peer.parsed("jurisdiction", Jurisdiction.parse)
        if peer_jurisdiction is jurisdiction:
            raise peer.error(
                "jurisdiction", f"a node does not peer with its own jurisdiction {jurisdiction}"
            )
        if any(p.jurisdiction is peer_jurisdiction for p in peers):
            raise peer.error("jurisdiction", f"{peer_jurisdiction} is listed twice")
        address, address_file = "", None
        addresses: tuple[str, ...] = ()
        address_files: tuple[Path, ...] = ()
        given = [k for k in _ADDRESS_KEYS if k in peer.table]
        if len(given) > 1:
            keys = f"{', '.join(_ADDRESS_KEYS[:-1])} or {_ADDRESS_KEYS[-1]}"
            raise peer.error(given[0], f"give one of {keys}, not several")
        if given == ["address_file"]:
            address_file = (source.parent / peer.take("address_file", str)).resolve()
        elif given == ["addresses"]:
            addresses = tuple(_list_of(peer, "addresses", _address))
        elif given == ["address_files"]:
            address_files = tuple(
                (source.parent / f).resolve() for f in _list_of(peer, "address_files", str)
            )
        else:
            address = peer.parsed("address", _address)
        peers.append(
            PeerConfig(
                peer_jurisdiction,
                address,
                peer.parsed("name", _name, "gateway"),
                address_file,
                addresses,
                address_files,
            )
        )
        peer.done()

    srv = top.sub("server", required=False)
    defaults = ServerSettings()
    settings = ServerSettings(
        grace_seconds=srv.take("grace_seconds", float, defaults.grace_seconds),
        max_workers=srv.take("max_workers", int, defaults.max_workers),
        expiry_warning_days=srv.take("expiry_warning_days", int, defaults.expiry_warning_days),
        checkpoint_interval_seconds=srv.take(
            "checkpoint_interval_seconds", float, defaults.checkpoint_interval_seconds
        ),
        tls_reload_seconds=srv.take("tls_reload_seconds", float, defaults.tls_reload_seconds),
        retention_sweep_seconds=srv.take(
            "retention_sweep_seconds", float, defaults.retention_sweep_seconds
        ),
        lease_seconds=srv.take("lease_seconds", float, defaults.lease_seconds),
        pin_python_threads=srv.take("pin_python_threads", bool, defaults.pin_python_threads),
    )
    for key in ("checkpoint_interval_seconds", "retention_sweep_seconds", "lease_seconds"):
        if getattr(settings, key) <= 0:
            raise srv.error(key, "must be positive")
    if settings.tls_reload_seconds <= 0:
        raise srv.error("tls_reload_seconds", "must be positive")
    if settings.expiry_warning_days < 0:
        raise srv.error("expiry_warning_days", "must not be negative")
    if settings.max_workers < 1:
        raise srv.error("max_workers", "must be at least 1")
    if settings.grace_seconds < 0:
        raise srv.error("grace_seconds", "must not be negative")
    srv.done()
    delivery = _delivery(top)
    metrics = top.sub("metrics", required=False)
    metrics_listen = metrics.parsed("listen", _address) if "listen" in metrics.table else None
    metrics.done()
    limits = _limits(top.sub("limits", required=False), settings.max_workers)
    storage = _storage(top)
    top.done()
    return NodeConfig(
        source=source,
        jurisdiction=jurisdiction,
        name=name,
        listen=listen,
        data_dir=data_dir,
        tls_certificate=tls_certificate,
        tls_key=tls_key,
        trust_bundle=bundle,
        signing_certificate=signing_certificate,
        signing_key=signing_key,
        crls=tuple(crls),
        peers=tuple(peers),
        server=settings,
        metrics_listen=metrics_listen,
        delivery=delivery,
        limits=limits,
        storage=storage,
    )


_LIMIT_INTS = COUNT_LIMITS
_LIMIT_FLOATS = ("stream_lifetime_seconds", "storage_probe_seconds")


def _limits(table: _Reader, workers: int) -> Limits:
    """The ``[limits]`` table; refused when the node could not enforce it (ADR 0023)."""
    given: dict[str, Any] = {}
    for key in _LIMIT_INTS:
        if key in table.table:
            given[key] = table.take(key, int)
    for key in _LIMIT_FLOATS:
        if key in table.table:
            given[key] = table.take(key, float)
    table.asked.update(_LIMIT_INTS + _LIMIT_FLOATS)  # what a misspelt key is compared to
    table.done()
    limits = Limits.for_workers(workers, **given)
    for key, problem in limits.problems():
        raise table.error(key, problem)
    return limits
