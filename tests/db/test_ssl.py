"""libpq's `sslmode` and certificate parameters in the database URL, as asyncpg takes them."""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError
from sqlalchemy import text

from codeactions.config import SSL_MODES, DatabaseSettings
from codeactions.db.session import DatabaseUnreachable, check_connection, create_engine
from tests.conftest import PG_ADMIN_URL, need_service
from tests.faults.conftest import need_installed
from tests.faults.processes import LOCALHOST, PostgresCluster


@pytest.mark.parametrize("mode", SSL_MODES)
def test_each_sslmode_moves_from_the_url_to_asyncpgs_dsn(mode: str) -> None:
    database = DatabaseSettings(url=f"postgres://app:pw@db.example:5432/app?sslmode={mode}")
    assert database.async_url == "postgresql+asyncpg://app:pw@db.example:5432/app"
    assert database.ssl_connect_args == {"dsn": f"postgresql://?sslmode={mode}"}


def test_certificate_files_go_with_the_mode_and_other_parameters_stay() -> None:
    url = (
        "postgresql://app@db.example/app?application_name=ca&sslmode=verify-full"
        "&sslrootcert=%2Fetc%2Fca.pem&sslcert=/c.pem&sslkey=/c.key&sslpassword=k&sslcrl=/crl.pem"
    )
    database = DatabaseSettings(url=url)
    assert database.async_url == "postgresql+asyncpg://app@db.example/app?application_name=ca"
    assert database.ssl_connect_args == {
        "dsn": "postgresql://?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&sslcert=/c.pem"
        "&sslkey=/c.key&sslpassword=k&sslcrl=/crl.pem"
    }


def test_urls_without_tls_parameters_are_unchanged() -> None:
    assert DatabaseSettings(url="postgresql://u@h/db").ssl_connect_args == {}
    assert DatabaseSettings(url="postgresql://u@h/db").async_url == "postgresql+asyncpg://u@h/db"
    sqlite = DatabaseSettings(url="sqlite:///x.db?sslmode=require")
    assert sqlite.ssl_connect_args == {}


def test_an_unknown_sslmode_is_refused_without_printing_the_password() -> None:
    with pytest.raises(ValidationError) as refused:
        DatabaseSettings(url="postgresql://u:hunter2@h/db?sslmode=required")
    assert "sslmode must be one of disable, allow, prefer" in str(refused.value)
    assert "hunter2" not in str(refused.value)


async def connection_uses_tls(database: DatabaseSettings) -> bool:
    engine = create_engine(database)
    try:
        async with engine.connect() as conn:
            query = text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            return bool((await conn.execute(query)).scalar_one())
    finally:
        await engine.dispose()


@pytest.fixture
def plain_postgres() -> str:
    """The local PostgreSQL, which has TLS off."""
    need_service("PostgreSQL", "127.0.0.1", 5432)
    return PG_ADMIN_URL


async def test_disable_and_prefer_connect_to_a_server_without_tls(plain_postgres: str) -> None:
    assert not await connection_uses_tls(DatabaseSettings(url=f"{plain_postgres}?sslmode=disable"))
    await connection_uses_tls(DatabaseSettings(url=f"{plain_postgres}?sslmode=prefer"))


async def test_require_against_a_server_without_tls_says_so(plain_postgres: str) -> None:
    database = DatabaseSettings(url=f"{plain_postgres}?sslmode=require")
    engine = create_engine(database)
    try:
        with pytest.raises(DatabaseUnreachable) as refused:
            await check_connection(engine, database)
    finally:
        await engine.dispose()
    assert "rejected SSL upgrade" in str(refused.value)
    assert "does not accept TLS" in str(refused.value)


def test_the_command_reports_an_unreachable_database_in_one_line(
    plain_postgres: str, tmp_path: Path
) -> None:
    environment = {
        **os.environ,
        "CODEACTIONS_DATABASE_URL": f"{plain_postgres}?sslmode=require",
        "CODEACTIONS_SPOOL_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "codeactions.cli", "migrate"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("codeactions: cannot connect to the database postgresql://"), line
    assert "sslmode=require" in line and "does not accept TLS" in line


def write_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed CA certificate for 127.0.0.1, the server's and its own root: (pem, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LOCALHOST)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder(name, name, key.public_key(), x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOCALHOST))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    pem, key_file = directory / "server.pem", directory / "server.key"
    pem.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)  # PostgreSQL refuses a key others may read
    return pem, key_file


class TlsPostgres(PostgresCluster):
    """A cluster with `ssl=on`, serving a self-signed certificate for 127.0.0.1 (`ca`)."""

    def __init__(self) -> None:
        super().__init__()
        self.cert, self.key = write_certificate(self.dir)
        self.ca = self.cert
        if self._owner is not None:
            for path in (self.cert, self.key):
                os.chown(path, self._owner.pw_uid, self._owner.pw_gid)

    def command(self) -> list[str]:
        tls = {"ssl": "on", "ssl_cert_file": self.cert, "ssl_key_file": self.key}
        return [*super().command(), *(a for k, v in tls.items() for a in ("-c", f"{k}={v}"))]


@pytest.fixture(scope="module")
def tls_postgres() -> Iterator[TlsPostgres]:
    need_installed(PostgresCluster)
    cluster = TlsPostgres()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


async def test_require_and_verify_full_use_tls(tls_postgres: TlsPostgres) -> None:
    url = tls_postgres.url
    assert await connection_uses_tls(DatabaseSettings(url=f"{url}?sslmode=require"))
    assert await connection_uses_tls(
        DatabaseSettings(url=f"{url}?sslmode=verify-full&sslrootcert={tls_postgres.ca}")
    )
    assert not await connection_uses_tls(DatabaseSettings(url=f"{url}?sslmode=disable"))


async def test_verify_full_checks_the_host_name_and_verify_ca_does_not(
    tls_postgres: TlsPostgres,
) -> None:
    # The certificate names 127.0.0.1, not localhost.
    by_name = tls_postgres.url.replace(LOCALHOST, "localhost")
    ca = f"sslrootcert={tls_postgres.ca}"
    assert await connection_uses_tls(DatabaseSettings(url=f"{by_name}?sslmode=verify-ca&{ca}"))
    database = DatabaseSettings(url=f"{by_name}?sslmode=verify-full&{ca}")
    engine = create_engine(database)
    try:
        with pytest.raises(DatabaseUnreachable) as refused:
            await check_connection(engine, database)
    finally:
        await engine.dispose()
    assert "SSLCertVerificationError" in str(refused.value)
    assert "verify-full also checks the host name" in str(refused.value)


async def test_require_with_a_root_certificate_verifies_as_libpq_does(
    tls_postgres: TlsPostgres, tmp_path: Path
) -> None:
    other_ca, _ = write_certificate(tmp_path)  # not the server's certificate
    database = DatabaseSettings(url=f"{tls_postgres.url}?sslmode=require&sslrootcert={other_ca}")
    engine = create_engine(database)
    try:
        with pytest.raises(DatabaseUnreachable, match="certificate verify failed"):
            await check_connection(engine, database)
    finally:
        await engine.dispose()
