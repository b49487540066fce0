"""The OIDC provider process the tests start (`python -m tests.auth.provider_server`).

On its service port it serves what an identity provider serves: a discovery document, the JWKS
(at Keycloak's path), a userinfo endpoint (at `/userinfo`, not Keycloak's path, so only
discovery or the setting lead there) and a token endpoint (Keycloak's path; RFC 6749 password and
refresh_token grants, public and confidential clients, client_secret_basic and client_secret_post).
On a second, control port the tests (through `tests.auth.provider.FakeProvider`) have it issue
tokens, register opaque ones, users and clients, report how often each endpoint was called, close
its service port (connection refused), answer an error status or slowly.
It imports nothing of the service or the tests.
"""

from __future__ import annotations

import base64
import json
import secrets
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote_plus

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

REALM_PATH = "/realms/weni"
USERINFO_PATH = "/userinfo"
TOKEN_PATH = f"{REALM_PATH}/protocol/openid-connect/token"
CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
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
            self.calls = {"discovery": 0, "jwks": 0, "userinfo": 0, "token": 0}
            self.status = 200
            self.delay = 0.0
            self.users: dict[str, dict[str, Any]] = {}  # username -> password, subject, claims
            self.clients: dict[str, str | None] = {}  # client id -> secret (None: public)
            self.auth_methods = list(CLIENT_AUTH_METHODS)  # what discovery advertises
            self.access_seconds, self.refresh_seconds = 300, 1800
            self.revoked: set[str] = set()  # session ids logged out
            self.last_client_auth = ""  # how the last token request authenticated its client
            # Refresh tokens are HS256, signed with a secret only the provider knows, as
            # Keycloak's: never accepted as an access token by a verifier of the published keys.
            self.refresh_secret = secrets.token_bytes(32)

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

    def token_response(
        self, form: dict[str, str], authorization: str, issuer: str
    ) -> tuple[int, Any]:
        """RFC 6749 4.3 and 6: the password and refresh_token grants, after client auth (2.3)."""
        with self.lock:
            client_id, refused = self._client(form, authorization)
            if refused is not None:
                return refused
            grant = form.get("grant_type")
            if grant == "password":
                user = self.users.get(form.get("username", ""))
                if user is None or user["password"] != form.get("password"):
                    return 400, {
                        "error": "invalid_grant",
                        "error_description": "Invalid user credentials",
                    }
                return 200, self._issue(issuer, form["username"], client_id, secrets.token_hex(16))
            if grant == "refresh_token":
                try:
                    claims = jwt.decode(
                        form.get("refresh_token", ""), self.refresh_secret, algorithms=["HS256"]
                    )
                except jwt.PyJWTError:
                    return 400, {
                        "error": "invalid_grant",
                        "error_description": "Invalid refresh token",
                    }
                if claims.get("azp") != client_id or claims.get("sid") in self.revoked:
                    return 400, {
                        "error": "invalid_grant",
                        "error_description": "Session not active",
                    }
                return 200, self._issue(
                    issuer, claims["preferred_username"], client_id, claims["sid"]
                )
            return 400, {"error": "unsupported_grant_type"}

    def _client(
        self, form: dict[str, str], authorization: str
    ) -> tuple[str, tuple[int, Any] | None]:
        """The client the request authenticates as, or the refusal."""
        invalid = (
            401,
            {"error": "invalid_client", "error_description": "Invalid client credentials"},
        )
        secret: str | None = None
        if authorization.lower().startswith("basic "):
            try:
                pair = base64.b64decode(authorization[6:], validate=True).decode()
            except ValueError:
                return "", invalid
            name, _, given = pair.partition(":")
            client_id, secret, method = (
                unquote_plus(name),
                unquote_plus(given),
                "client_secret_basic",
            )
        else:
            client_id = form.get("client_id", "")
            secret = form.get("client_secret")
            method = "client_secret_post" if secret is not None else "none"
        self.last_client_auth = method
        if client_id not in self.clients:
            return client_id, invalid
        expected = self.clients[client_id]
        if expected is None:  # a public client
            return client_id, None if secret is None else invalid
        if method not in self.auth_methods or secret != expected:
            return client_id, invalid
        return client_id, None

    def _issue(self, issuer: str, username: str, client_id: str, session_id: str) -> dict[str, Any]:
        user, now = self.users[username], int(time.time())
        common = {"iss": issuer, "sub": user["subject"], "iat": now, "sid": session_id}
        access = {
            **common,
            "aud": "account",
            "azp": client_id,
            "typ": "Bearer",
            "exp": now + self.access_seconds,
            "jti": secrets.token_hex(8),
            **user["claims"],
        }
        refresh = {
            **common,
            "azp": client_id,
            "typ": "Refresh",
            "exp": now + self.refresh_seconds,
            "jti": secrets.token_hex(8),
            "preferred_username": username,
        }
        access_token = jwt.encode(access, self.keys["k1"], algorithm="RS256", headers={"kid": "k1"})
        self.userinfo[access_token] = {"sub": user["subject"], **user["claims"]}
        self.expires[access_token] = float(access["exp"])
        return {
            "access_token": access_token,
            "expires_in": self.access_seconds,
            "refresh_expires_in": self.refresh_seconds,
            "refresh_token": jwt.encode(refresh, self.refresh_secret, algorithm="HS256"),
            "token_type": "Bearer",
            "session_state": session_id,
            "scope": "email profile",
        }


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

    def do_POST(self) -> None:
        state = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        if self.path != TOKEN_PATH:
            self.answer(404, {"error": "not_found"})
            return
        with state.lock:
            state.calls["token"] += 1
            status, delay = state.status, state.delay
        if delay:
            time.sleep(delay)
        if status != 200:
            self.answer(status, {"error": "server_error"})
            return
        # A parameter sent twice is a request error (RFC 6749 3.2); here the first one counts.
        form = {name: values[0] for name, values in parse_qs(body, keep_blank_values=True).items()}
        issuer = f"http://{self.headers.get('Host')}{REALM_PATH}"
        self.answer(*state.token_response(form, self.headers.get("Authorization", ""), issuer))

    def discovery(self, base: str) -> dict[str, Any]:
        with self.server.state.lock:
            auth_methods = list(self.server.state.auth_methods)
        return {
            "issuer": f"{base}{REALM_PATH}",
            "jwks_uri": f"{base}{REALM_PATH}/protocol/openid-connect/certs",
            "userinfo_endpoint": f"{base}{USERINFO_PATH}",
            "token_endpoint": f"{base}{TOKEN_PATH}",
            "token_endpoint_auth_methods_supported": auth_methods,
            "grant_types_supported": ["password", "refresh_token"],
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
                self.answer(200, {**state.calls, "last_client_auth": state.last_client_auth})
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
        elif self.path == "/users":
            with state.lock:
                state.users[body["username"]] = {
                    "password": body["password"],
                    "subject": body["subject"],
                    "claims": body["claims"],
                }
            self.answer(200, {})
        elif self.path == "/clients":
            with state.lock:
                state.clients[body["client_id"]] = body["secret"]
            self.answer(200, {})
        elif self.path == "/revoke":
            with state.lock:
                state.revoked.add(body["session_id"])
            self.answer(200, {})
        elif self.path == "/mode":
            with state.lock:
                state.status = body.get("status", state.status)
                state.delay = body.get("delay", state.delay)
                state.auth_methods = body.get("auth_methods", state.auth_methods)
                state.access_seconds = body.get("access_seconds", state.access_seconds)
                state.refresh_seconds = body.get("refresh_seconds", state.refresh_seconds)
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
