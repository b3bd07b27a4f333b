"""A private mosquitto on a loopback port, for the tests and the demo.

Everything it needs (password file, ACL, config, per-account password files, log) is
generated in a directory the caller owns, so nothing leaks into the machine's broker
setup. It can be killed and restarted on the same port, which is how broker outages are
staged. It never outlives its ``with`` block.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from stimd.mqtt.broker_config import Account, Role, render_acl, render_mosquitto_conf
from stimd.mqtt.config import MqttConfig

MOSQUITTO_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
#: Above the daemon's default max_payload_bytes so oversized commands reach the daemon
#: and are answered; anything larger the broker itself refuses.
DEFAULT_MAX_PACKET_SIZE = 262_144
#: As in the clinic example (and mosquitto's default); tests lower it to stage overflows.
DEFAULT_MAX_QUEUED_MESSAGES = 1000
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
HOST = "127.0.0.1"


class BrokerError(RuntimeError):
    """The private broker could not be set up or started; the message says why."""


def find_mosquitto() -> Path:
    for candidate in MOSQUITTO_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return Path(candidate)
    found = shutil.which("mosquitto")
    if found is None:
        raise BrokerError(
            "mosquitto is not installed (Debian: apt-get install mosquitto; `make demo` "
            "does this)"
        )
    return Path(found)


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def generated_password() -> str:
    return secrets.token_urlsafe(18)


def standard_accounts(
    devices: Sequence[str], operators: Sequence[str], dashboards: Sequence[str]
) -> list[Account]:
    """Accounts with fresh random passwords."""
    return [
        *(Account(name, Role.DEVICE, generated_password()) for name in devices),
        *(Account(name, Role.OPERATOR, generated_password()) for name in operators),
        *(Account(name, Role.DASHBOARD, generated_password()) for name in dashboards),
    ]


class PrivateBroker:
    def __init__(
        self,
        workdir: Path,
        accounts: Sequence[Account],
        *,
        port: int | None = None,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        max_queued_messages: int = DEFAULT_MAX_QUEUED_MESSAGES,
    ) -> None:
        names = [a.name for a in accounts]
        if len(set(names)) != len(names):
            raise BrokerError(f"duplicate account names in {sorted(names)}")
        self.workdir = workdir
        self.accounts = {a.name: a for a in accounts}
        self.host = HOST
        self.port = port if port is not None else free_loopback_port()
        self._max_packet_size = max_packet_size
        self._max_queued_messages = max_queued_messages
        self._mosquitto = find_mosquitto()
        self._process: subprocess.Popen[bytes] | None = None
        self.conf_file = workdir / "mosquitto.conf"
        self.log_file = workdir / "mosquitto.log"
        self._write_files()

    # ------------------------------------------------------------------ files

    def _write_files(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        password_file = self.workdir / "passwd"
        password_file.unlink(missing_ok=True)
        for index, account in enumerate(self.accounts.values()):
            create = ["-c"] if index == 0 else []
            result = subprocess.run(
                ["mosquitto_passwd", *create, "-b", str(password_file), account.name,
                 account.password],
                capture_output=True, check=False, timeout=10,
            )
            if result.returncode != 0:
                raise BrokerError(
                    f"mosquitto_passwd failed for {account.name!r}: "
                    f"{result.stderr.decode(errors='replace').strip()}"
                )
            secret = self.password_file(account.name)
            secret.write_text(account.password + "\n", encoding="utf-8")
            secret.chmod(0o600)
        acl_file = self.workdir / "acl"
        acl_file.write_text(render_acl(list(self.accounts.values())), encoding="utf-8")
        self.conf_file.write_text(
            render_mosquitto_conf(
                port=self.port, password_file=password_file, acl_file=acl_file,
                log_file=self.log_file, max_packet_size=self._max_packet_size,
                max_queued_messages=self._max_queued_messages,
                run_as=getpass.getuser(),
            ),
            encoding="utf-8",
        )

    def password_file(self, name: str) -> Path:
        return self.workdir / f"{name}.password"

    def client_config(self, name: str, **overrides: object) -> MqttConfig:
        """An ``[mqtt]`` table for account ``name`` (the daemon's, stimctl's, a test's)."""
        if name not in self.accounts:
            raise BrokerError(f"no account {name!r}; accounts: {sorted(self.accounts)}")
        return MqttConfig.model_validate({
            "host": self.host, "port": self.port, "username": name,
            "password_file": self.password_file(name), **overrides,
        })

    # ------------------------------------------------------------------ process

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.running:
            raise BrokerError(f"broker already running on port {self.port}")
        self._process = subprocess.Popen(
            [str(self._mosquitto), "-c", str(self.conf_file)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C meant for the demo does not reach it first
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                stderr = self._process.stderr.read() if self._process.stderr else b""
                self._process = None
                raise BrokerError(
                    f"mosquitto exited at start on port {self.port}: "
                    f"{stderr.decode(errors='replace').strip()} {self.log_tail()}"
                )
            if self._accepts_connections():
                return
            time.sleep(0.02)
        self.kill()
        raise BrokerError(f"mosquitto did not listen on port {self.port} within "
                          f"{START_TIMEOUT_S} s: {self.log_tail()}")

    def _accepts_connections(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without a word, as in a crash."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def restart(self) -> None:
        self.kill()
        self.start()

    def _end(self, sig: signal.Signals) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_S)
        if process.stderr is not None:
            process.stderr.close()

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
