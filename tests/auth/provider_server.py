"""The OIDC provider process the tests start (`python -m tests.auth.provider_server`).

On its service port it serves what an identity provider serves: a discovery document, the JWKS
(at Keycloak's path) and a userinfo endpoint (at `/userinfo`, not Keycloak's path, so only
discovery or the setting lead there). On a second, control port the tests (through
`tests.auth.provider.FakeProvider`) have it issue tokens, register opaque ones, report how often each
endpoint was called, close its service port (connection refused), answer an error status or slowly.
It imports nothing of the service or the tests.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

REALM_PATH = "/realms/weni"
USERINFO_PATH = "/userinfo"
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _new_key(algorithm: str) -> PrivateKey:
    if algorithm.startswith("ES"):
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _public_jwk(kid: str, key: PrivateKey) -> dict[str, Any]:
    algorithm: Any = (
        jwt.algorithms.RSAAlgorithm
        if isinstance(key, rsa.RSAPrivateKey)
        else jwt.algorithms.ECAlgorithm
    )
    jwk: dict[str, Any] = algorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update(kid=kid, use="sig")
    return jwk


class ProviderState:
    """What the provider knows: its keys, the tokens it issued and what userinfo says of them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # Generated keys are kept across resets: RSA generation is the slow part.
        self._generated: dict[tuple[str, bool], PrivateKey] = {}
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.keys: dict[str, PrivateKey] = {"k1": self._key("k1", "RS256")}
            self.userinfo: dict[str, dict[str, Any]] = {}  # bearer token -> its userinfo answer
            self.expires: dict[str, float] = {}  # issued JWT -> its exp
            self.calls = {"discovery": 0, "jwks": 0, "userinfo": 0}
            self.status = 200
            self.delay = 0.0

    def _key(self, kid: str, algorithm: str) -> PrivateKey:
        slot = (kid, algorithm.startswith("ES"))
        if slot not in self._generated:
            self._generated[slot] = _new_key(algorithm)
        return self._generated[slot]

    def publish(self, kid: str, algorithm: str) -> None:
        with self.lock:
            self.keys[kid] = self._key(kid, algorithm)

    def jwks(self) -> dict[str, Any]:
        keys = [_public_jwk(kid, key) for kid, key in self.keys.items()]
        # Providers list encryption keys too; they must be ignored.
        keys.append({"kid": "enc", "kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"})
        return {"keys": keys}

    def sign(
        self, payload: dict[str, Any], kid: str, algorithm: str, userinfo: dict[str, Any] | None
    ) -> str:
        with self.lock:
            # A kid the provider does not publish is signed with k1: a token naming an unknown key.
            key = self.keys.get(kid) or self.keys["k1"]
            token = jwt.encode(payload, key, algorithm=algorithm, headers={"kid": kid})
            if userinfo is not None:
                self.userinfo[token] = userinfo
                if isinstance(payload.get("exp"), int | float):
                    self.expires[token] = float(payload["exp"])
        return token

    def userinfo_answer(self, authorization: str) -> dict[str, Any] | None:
        """The claims for a live token it knows, else None (the provider's 401)."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        with self.lock:
            if self.expires.get(token, float("inf")) <= time.time():
                return None
            return self.userinfo.get(token)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: ProviderState
    service: Service


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stall

    def answer(self, status: int, document: Any) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _ServiceHandler(_Handler):
    """What the service under test calls; one request per connection (HTTP/1.0), so closing the
    port takes the provider down for every client at once."""

    def do_GET(self) -> None:
        state = self.server.state
        base = f"http://{self.headers.get('Host')}"
        endpoints: dict[str, tuple[str, Callable[[], tuple[int, Any]]]] = {
            f"{REALM_PATH}/.well-known/openid-configuration": (
                "discovery",
                lambda: (200, self.discovery(base)),
            ),
            f"{REALM_PATH}/protocol/openid-connect/certs": ("jwks", lambda: (200, state.jwks())),
            USERINFO_PATH: ("userinfo", self.userinfo),
        }
        if self.path not in endpoints:
            self.answer(404, {"error": "not_found"})
            return
        name, serve = endpoints[self.path]
        with state.lock:
            state.calls[name] += 1
            status, delay = state.status, state.delay
        if delay:
            time.sleep(delay)
        if status != 200:
            self.answer(status, {"error": "server_error"})
            return
        self.answer(*serve())

    @staticmethod
    def discovery(base: str) -> dict[str, Any]:
        return {
            "issuer": f"{base}{REALM_PATH}",
            "jwks_uri": f"{base}{REALM_PATH}/protocol/openid-connect/certs",
            "userinfo_endpoint": f"{base}{USERINFO_PATH}",
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        }

    def userinfo(self) -> tuple[int, Any]:
        claims = self.server.state.userinfo_answer(self.headers.get("Authorization", ""))
        if claims is None:
            return 401, {"error": "invalid_token"}
        return 200, claims


class _ControlHandler(_Handler):
    """What the tests call."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        state = self.server.state
        if self.path == "/state":
            with state.lock:
                self.answer(200, state.calls)
        elif self.path == "/keys":
            with state.lock:
                self.answer(200, state.jwks())
        else:
            self.answer(404, {})

    def do_POST(self) -> None:
        state, service = self.server.state, self.server.service
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if self.path == "/reset":
            state.reset()
            service.start()
            self.answer(200, {})
        elif self.path == "/publish":
            state.publish(body["kid"], body["algorithm"])
            self.answer(200, {})
        elif self.path == "/sign":
            token = state.sign(body["payload"], body["kid"], body["algorithm"], body["userinfo"])
            self.answer(200, {"token": token})
        elif self.path == "/userinfo":
            with state.lock:
                state.userinfo[body["token"]] = body["claims"]
            self.answer(200, {})
        elif self.path == "/mode":
            with state.lock:
                state.status = body.get("status", state.status)
                state.delay = body.get("delay", state.delay)
            if body.get("down") is True:
                service.stop()
            elif body.get("down") is False:
                service.start()
            self.answer(200, {})
        else:
            self.answer(404, {})


class Service:
    """The provider's public port, which can be closed and reopened on the same number."""

    def __init__(self, state: ProviderState) -> None:
        self.state = state
        self.port = 0
        self._server: _Server | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._server is None:
                self._server = _serve(("127.0.0.1", self.port), _ServiceHandler, self.state, self)
                self.port = self._server.server_address[1]

    def stop(self) -> None:
        with self._lock:
            if self._server is not None:
                self._server.shutdown()
                self._server.server_close()
                self._server = None


def _serve(
    address: tuple[str, int], handler: type[_Handler], state: ProviderState, service: Service
) -> _Server:
    server = _Server(address, handler)
    server.state, server.service = state, service
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


def main() -> None:
    state = ProviderState()
    service = Service(state)
    service.start()
    control = _serve(("127.0.0.1", 0), _ControlHandler, state, service)
    print(json.dumps({"service": service.port, "control": control.server_address[1]}), flush=True)
    # The tests' process holds stdin: when it ends, however it ends, the provider ends too.
    sys.stdin.read()


if __name__ == "__main__":
    main()
