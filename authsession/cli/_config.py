"""Where the command finds credentials: flags, a file, ``AUTHSESSION_*`` variables, google-auth's places.

Resolution is plain code over the parsed flags and an environment mapping, so it
is tested without a network or an event loop. Nothing here puts a secret in a
message: errors name settings and files, never values.

Order (the first that applies wins):

1. ``--credentials FILE``
2. ``--client-id`` / ``--client-secret`` / ``--token-uri`` (the other fields may
   come from ``AUTHSESSION_*``, so a secret need not be on the command line)
3. ``$AUTHSESSION_CREDENTIALS`` (a file)
4. ``$AUTHSESSION_TOKEN_URI``, ``$AUTHSESSION_CLIENT_ID`` and
   ``$AUTHSESSION_CLIENT_SECRET`` or ``$AUTHSESSION_REFRESH_TOKEN``
5. the stored sign-in of ``authsession login``
6. ``$GOOGLE_APPLICATION_CREDENTIALS`` (a google-auth JSON file)
7. gcloud's application default credentials file
   (``gcloud auth application-default login``)

A file is either a google-auth JSON (service account, authorized user, external
account...: it has a ``"type"``) or an authsession OAuth2 client config, JSON or
TOML, with the keys of :data:`CONFIG_KEYS`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._grants import ClientCredentials, RefreshTokenCredentials
from ._errors import UsageError

__all__ = [
    "CONFIG_KEYS",
    "CredentialFlags",
    "Resolved",
    "gcloud_adc_path",
    "load_file",
    "parse_scopes",
    "resolve",
]

ENV_PREFIX = "AUTHSESSION_"
#: The settings of an authsession OAuth2 client config (file keys; AUTHSESSION_<KEY> in the environment).
CONFIG_KEYS = ("token_uri", "client_id", "client_secret", "refresh_token", "scopes", "audience", "auth_method")
#: Asked for when a google-auth service account file names no scopes, as gcloud does.
GOOGLE_DEFAULT_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
#: The google-auth credential files understood (a JSON ``"type"``).
GOOGLE_TYPES = frozenset(
    {
        "authorized_user",
        "service_account",
        "external_account",
        "external_account_authorized_user",
        "impersonated_service_account",
    }
)


@dataclass(frozen=True)
class CredentialFlags:
    """The credential options given on the command line (None: not given)."""

    credentials: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    token_uri: str | None = None
    scopes: tuple[str, ...] | None = None
    audience: str | None = None

    @property
    def names_a_client(self) -> bool:
        """Whether any of --client-id, --client-secret, --token-uri was given."""
        return any(v is not None for v in (self.client_id, self.client_secret, self.token_uri))


@dataclass(frozen=True)
class Resolved:
    """Credentials ready for an AuthorizedSession, and a description of where they came from (no secrets)."""

    credentials: Any
    source: str
    scopes: tuple[str, ...] | None = None


def parse_scopes(values: Iterable[str] | str | None) -> tuple[str, ...] | None:
    """Scopes from repeated options or one string, separated by spaces or commas."""
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    scopes = tuple(s for value in values for s in value.replace(",", " ").split())
    return scopes or None


def gcloud_adc_path(environ: Mapping[str, str]) -> Path:
    """Where ``gcloud auth application-default login`` writes its credentials."""
    if environ.get("CLOUDSDK_CONFIG"):
        config = Path(environ["CLOUDSDK_CONFIG"])
    elif sys.platform == "win32" and environ.get("APPDATA"):  # pragma: no cover - Windows
        config = Path(environ["APPDATA"]) / "gcloud"
    else:
        home = Path(environ["HOME"]) if environ.get("HOME") else Path.home()
        config = home / ".config" / "gcloud"
    return config / "application_default_credentials.json"


def resolve(flags: CredentialFlags, environ: Mapping[str, str]) -> Resolved:
    """Find the credentials the command should use.

    Raises:
        UsageError: Nothing was found (the message lists every place looked at),
            or what was found is incomplete or malformed.
    """
    env_scopes = parse_scopes(environ.get(ENV_PREFIX + "SCOPES"))
    scopes = flags.scopes or env_scopes
    if flags.credentials is not None:
        if flags.names_a_client:
            raise UsageError("give either --credentials or --client-id/--client-secret/--token-uri, not both")
        return load_file(
            flags.credentials, scopes=scopes, audience=flags.audience, origin="--credentials", environ=environ
        )
    env_fields = {key: environ.get(ENV_PREFIX + key.upper()) or None for key in CONFIG_KEYS if key != "scopes"}
    if flags.names_a_client:
        fields = {
            **env_fields,
            **{k: v for k, v in vars(flags).items() if k in CONFIG_KEYS and v is not None},
        }
        return _from_fields(fields, scopes, "command-line options", environ)
    env_file = environ.get(ENV_PREFIX + "CREDENTIALS")
    if env_file:
        return load_file(
            env_file, scopes=scopes, audience=flags.audience, origin="$AUTHSESSION_CREDENTIALS", environ=environ
        )
    if any(env_fields.values()):
        if flags.audience:
            env_fields["audience"] = flags.audience
        return _from_fields(env_fields, scopes, "AUTHSESSION_* environment variables", environ)
    from ._signin import stored_sign_in  # the sign-in module reads this one's types

    signed_in = stored_sign_in(environ, scopes=flags.scopes)
    if signed_in is not None:
        return signed_in
    google_file = environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if google_file:
        return load_file(google_file, scopes=scopes, origin="$GOOGLE_APPLICATION_CREDENTIALS")
    adc = gcloud_adc_path(environ)
    if adc.is_file():
        return load_file(str(adc), scopes=scopes, origin="gcloud application default credentials")
    raise UsageError(
        "no credentials found; looked for --credentials FILE, --client-id/--client-secret/--token-uri, "
        "$AUTHSESSION_CREDENTIALS, $AUTHSESSION_TOKEN_URI with $AUTHSESSION_CLIENT_ID and "
        "$AUTHSESSION_CLIENT_SECRET (or $AUTHSESSION_REFRESH_TOKEN), a stored sign-in (authsession login), "
        f"$GOOGLE_APPLICATION_CREDENTIALS, and {adc} (not found)"
    )


def load_file(
    path: str,
    *,
    scopes: tuple[str, ...] | None = None,
    audience: str | None = None,
    origin: str = "--credentials",
    environ: Mapping[str, str] | None = None,
) -> Resolved:
    """Credentials from a google-auth JSON file or an authsession client config (JSON or TOML).

    With ``environ``, a refresh token rotates in the command's refresh token store
    (see :func:`authsession.cli._signin.refresh_token_store`), so the next run
    presents the rotated one.

    Raises:
        UsageError: The file cannot be read or parsed, or its settings are incomplete.
    """
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{origin}: no such file: {file}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{origin}: cannot read {file}: {type(exc).__name__}") from None
    info = _parse(file, text)
    kind = info.get("type")
    if kind is not None:
        if kind not in GOOGLE_TYPES:
            shown = kind if isinstance(kind, str) and kind.isprintable() else "?"
            raise UsageError(
                f"{file}: type {shown[:40]!r} is not a google-auth credentials type "
                f"({', '.join(sorted(GOOGLE_TYPES))}); an authsession client config has no 'type'"
            )
        return _google(file, info, scopes)
    unknown = sorted(set(info) - set(CONFIG_KEYS))
    if unknown:
        raise UsageError(
            f"{file}: unknown setting(s) {', '.join(map(repr, unknown))}; an authsession client config "
            f"takes {', '.join(CONFIG_KEYS)}"
        )
    for key, value in info.items():
        if key == "scopes":
            if not (isinstance(value, str) or (isinstance(value, list) and all(isinstance(s, str) for s in value))):
                raise UsageError(f"{file}: scopes must be a string or a list of strings")
        elif not isinstance(value, str):
            raise UsageError(f"{file}: {key} must be a string")
    fields = {k: v for k, v in info.items() if k != "scopes"}
    if audience:
        fields["audience"] = audience
    return _from_fields(fields, scopes or parse_scopes(info.get("scopes")), str(file), environ)


def _parse(file: Path, text: str) -> dict[str, Any]:
    toml_first = file.suffix.lower() == ".toml"
    data: object
    if toml_first:
        data = _parse_toml(file, text)
    else:
        try:
            data = json.loads(text)
        except ValueError as exc:
            if file.suffix.lower() == ".json":
                raise UsageError(f"{file}: not valid JSON (line {getattr(exc, 'lineno', '?')})") from None
            data = _parse_toml(file, text, also="JSON")
    if not isinstance(data, dict):
        raise UsageError(f"{file}: expected a JSON object or a TOML table at the top")
    return data


def _parse_toml(file: Path, text: str, also: str | None = None) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise UsageError(
                f"{file}: reading TOML on Python 3.10 needs tomli: pip install 'authsession[cli]'"
            ) from None
    try:
        data: dict[str, Any] = tomllib.loads(text)
        return data
    except tomllib.TOMLDecodeError as exc:
        what = "TOML" if also is None else f"{also} nor TOML"
        # The decoder's message names a line and column, never the text there.
        raise UsageError(f"{file}: not valid {what} ({exc})") from None


def _google(file: Path, info: dict[str, Any], scopes: tuple[str, ...] | None) -> Resolved:
    from google.auth import exceptions as google_exceptions

    kind = info["type"]
    try:
        credentials = _load_google(kind, info, list(scopes) if scopes else None)
    except (google_exceptions.GoogleAuthError, ValueError, KeyError, TypeError) as exc:
        # google-auth's messages name the missing field or the problem, not the key material.
        detail = _one_line(exc) if isinstance(exc, (google_exceptions.GoogleAuthError, ValueError)) else ""
        raise UsageError(
            f"{file}: not usable google-auth {kind} credentials ({type(exc).__name__}{': ' + detail if detail else ''})"
        ) from None
    granted = scopes or tuple(
        getattr(credentials, "scopes", None) or getattr(credentials, "default_scopes", None) or ()
    )
    return Resolved(credentials, f"{file} (google-auth {kind})", granted or None)


def _load_google(kind: str, info: dict[str, Any], scopes: list[str] | None) -> Any:
    """google-auth credentials of the declared type, through that type's own loader.

    google-auth deprecates its generic loaders (``load_credentials_from_file``
    and ``_dict``) because they accept any type; the type-specific ones validate
    the configuration for that type.
    """
    default_scopes = list(GOOGLE_DEFAULT_SCOPES)
    if kind == "service_account":
        from google.oauth2 import service_account

        return service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            info, scopes=scopes, default_scopes=default_scopes
        )
    if kind == "authorized_user":
        from google.oauth2 import credentials as user_credentials

        return user_credentials.Credentials.from_authorized_user_info(info, scopes=scopes)  # type: ignore[no-untyped-call]
    if kind == "impersonated_service_account":
        from google.auth import impersonated_credentials

        return impersonated_credentials.Credentials.from_impersonated_service_account_info(  # type: ignore[no-untyped-call]
            info, scopes=scopes or default_scopes
        )
    if kind == "external_account_authorized_user":
        from google.auth import external_account_authorized_user

        return external_account_authorized_user.Credentials.from_info(info)  # type: ignore[no-untyped-call]
    # external_account: AWS, an executable (google-auth runs one only if
    # GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1), or a file/URL identity pool.
    source = info.get("credential_source")
    if info.get("subject_token_type") == "urn:ietf:params:aws:token-type:aws4_request":
        from google.auth import aws

        return aws.Credentials.from_info(info, scopes=scopes, default_scopes=default_scopes)  # type: ignore[no-untyped-call]
    if isinstance(source, dict) and source.get("executable") is not None:
        from google.auth import pluggable

        return pluggable.Credentials.from_info(info, scopes=scopes, default_scopes=default_scopes)  # type: ignore[no-untyped-call]
    from google.auth import identity_pool

    return identity_pool.Credentials.from_info(info, scopes=scopes, default_scopes=default_scopes)  # type: ignore[no-untyped-call]


_FLAG = {
    "token_uri": "--token-uri or AUTHSESSION_TOKEN_URI",
    "client_id": "--client-id or AUTHSESSION_CLIENT_ID",
    "client_secret": "--client-secret or AUTHSESSION_CLIENT_SECRET, or AUTHSESSION_REFRESH_TOKEN",
}


def _from_fields(
    fields: Mapping[str, str | None],
    scopes: tuple[str, ...] | None,
    source: str,
    environ: Mapping[str, str] | None = None,
) -> Resolved:
    from_file = source not in ("command-line options", "AUTHSESSION_* environment variables")
    required = ["token_uri", "client_id"]
    if not fields.get("refresh_token"):
        required.append("client_secret")
    missing = [key for key in required if not fields.get(key)]
    if missing:
        shown = ", ".join(missing) if from_file else "; ".join(f"{k} ({_FLAG[k]})" for k in missing)
        raise UsageError(f"incomplete OAuth2 client settings from {source}: missing {shown}")
    token_uri, client_id = fields["token_uri"], fields["client_id"]
    assert token_uri is not None
    assert client_id is not None
    auth_method = fields.get("auth_method") or "client_secret_basic"
    try:
        refresh_token = fields.get("refresh_token")
        if refresh_token:
            # A provider that rotates refresh tokens invalidates this one at the first refresh: the
            # rotated one is kept in the store, and the next run presents it instead.
            from ._signin import refresh_token_store

            credentials: ClientCredentials | RefreshTokenCredentials = RefreshTokenCredentials(
                token_uri,
                client_id,
                refresh_token,
                client_secret=fields.get("client_secret"),
                scopes=scopes,
                auth_method=auth_method,
                store=None if environ is None else refresh_token_store(environ),
            )
        else:
            secret = fields.get("client_secret")
            assert secret is not None
            credentials = ClientCredentials(
                token_uri, client_id, secret, scopes=scopes, audience=fields.get("audience"), auth_method=auth_method
            )
    except (ValueError, TypeError) as exc:
        # The constructors' messages name settings and the URL without its query, never a secret.
        raise UsageError(f"{source}: {exc}") from None
    grant = "refresh token" if refresh_token else "client credentials"
    return Resolved(credentials, f"{source} ({grant})", scopes)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]
