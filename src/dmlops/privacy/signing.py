"""Signed model manifests: Ed25519 signatures over an exported model's ``metadata.json``.

The manifest lists the sha256 of every file of the model folder, so a valid signature over it covers the
whole folder. ``train`` signs when a private key is configured; ``evaluate``, ``deploy`` and the predictor
verify when a public key is configured and refuse an unsigned or tampered model. Keys come from the
environment, never from a pipeline parameter: in a cluster mount a Kubernetes Secret as a file or an
environment variable.

- ``DMLOPS_MODEL_SIGNING_KEY`` / ``DMLOPS_MODEL_SIGNING_KEY_FILE``: the Ed25519 private key (PEM, PKCS#8).
- ``DMLOPS_MODEL_VERIFY_KEY`` / ``DMLOPS_MODEL_VERIFY_KEY_FILE``: the Ed25519 public key (PEM).

A step that starts pods of its own passes the keys on by reference, never by value:
``DMLOPS_MODEL_SIGNING_SECRET`` / ``DMLOPS_MODEL_VERIFY_SECRET`` (``<secret name>/<key>``, set by the
``model_signing`` cluster setting) name the Secret keys that ``train`` mounts into the training job's
rank-0 pods (:func:`dmlops.training.launch.signing_key_file`) and ``deploy`` gives the predictor
(:func:`verify_key_env`).

Whether or not a key is configured, :func:`verify` also checks the manifest's shape: it may only name
files inside the model folder, and every file in the folder must be listed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dmlops.data.errors import DataError
from dmlops.platform.naming import secret_reference

SIGNING_KEY = "DMLOPS_MODEL_SIGNING_KEY"
VERIFY_KEY = "DMLOPS_MODEL_VERIFY_KEY"
SIGNATURE_SUFFIX = ".sig"
SIGNING_SECRET = "DMLOPS_MODEL_SIGNING_SECRET"
VERIFY_SECRET = "DMLOPS_MODEL_VERIFY_SECRET"


class ModelIntegrityError(DataError):
    """A model folder that is unsigned, tampered with, or whose manifest names files it may not."""


def _configured_key(variable: str) -> bytes | None:
    """The PEM in ``variable``, or in the file ``variable``_FILE names; None when neither is set."""
    if os.environ.get(variable):
        return os.environ[variable].encode()
    path = os.environ.get(f"{variable}_FILE")
    if path:
        try:
            return Path(path).read_bytes()
        except OSError as error:
            raise ModelIntegrityError(f"{variable}_FILE={path} cannot be read: {error.strerror}") from None
    return None


def verify_key_env() -> dict[str, Any]:
    """``DMLOPS_MODEL_VERIFY_KEY`` from the public key's Secret key (:data:`VERIFY_SECRET`) as a container's
    env entry (``valueFrom.secretKeyRef``); {} when no Secret is named."""
    reference = secret_reference(VERIFY_SECRET)
    if reference is None:
        return {}
    return {"name": VERIFY_KEY, "valueFrom": {"secretKeyRef": {"name": reference[0], "key": reference[1]}}}


def generate_key_pair() -> tuple[str, str]:
    """A new (private PEM, public PEM) Ed25519 key pair, e.g. for ``kubectl create secret generic``."""
    private = Ed25519PrivateKey.generate()
    return (
        private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode(),
        private.public_key().public_bytes(serialization.Encoding.PEM,
                                          serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
    )


def _key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(directory: Path, manifest: str) -> bool:
    """Sign ``directory/manifest`` with the configured private key into ``<manifest>.sig``; False (and
    nothing written) when no signing key is configured."""
    pem = _configured_key(SIGNING_KEY)
    if pem is None:
        return False
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except ValueError:
        raise ModelIntegrityError(f"{SIGNING_KEY}: not a PEM private key") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise ModelIntegrityError(f"{SIGNING_KEY}: the key is not an Ed25519 key")
    signature = private.sign((directory / manifest).read_bytes())
    (directory / f"{manifest}{SIGNATURE_SUFFIX}").write_text(json.dumps({
        "algorithm": "ed25519", "key_id": _key_id(private.public_key()),
        "signature": base64.b64encode(signature).decode(),
    }))
    return True


def _inside(name: Any) -> bool:
    """Whether ``name`` is a relative path that stays inside the folder."""
    if not isinstance(name, str) or not name:
        return False
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts and "\\" not in name


def _check_shape(directory: Path, manifest: str, document: dict[str, Any], where: str) -> None:
    listed = document.get("files") or {}
    outside = sorted(str(name) for name in [*listed, *(document.get("model_files") or {}).values()]
                     if not _inside(name))
    if outside:
        raise ModelIntegrityError(f"{where}: {manifest} names {outside}, outside the model folder; refusing the model")
    root = directory.resolve()
    for name in (document.get("model_files") or {}).values():
        target = (directory / name).resolve()
        if not target.is_relative_to(root):
            raise ModelIntegrityError(f"{where}: model file {name} leads outside the model folder; refusing the model")
        if target.is_file() and name not in listed:
            raise ModelIntegrityError(f"{where}: model file {name} is not listed in {manifest}; refusing the model")
    present = {path.relative_to(directory).as_posix() for path in directory.rglob("*") if path.is_file() or path.is_symlink()}
    unlisted = sorted(present - set(listed) - {manifest, f"{manifest}{SIGNATURE_SUFFIX}"})
    if unlisted:
        raise ModelIntegrityError(
            f"{where}: files {unlisted[:5]} are in the model folder but not in {manifest}; refusing the model "
            "(export it again)"
        )


def verify(directory: Path, manifest: str, where: str) -> dict[str, Any]:
    """Check the model folder's manifest (files inside the folder, every file listed) and, when a public key
    is configured, its signature; returns the manifest. Raises ModelIntegrityError naming ``where``."""
    text = (directory / manifest).read_bytes()
    document = json.loads(text)
    _check_shape(directory, manifest, document, where)
    pem = _configured_key(VERIFY_KEY)
    if pem is None:
        return document
    try:
        public = serialization.load_pem_public_key(pem)
    except ValueError:
        raise ModelIntegrityError(f"{VERIFY_KEY}: not a PEM public key") from None
    if not isinstance(public, Ed25519PublicKey):
        raise ModelIntegrityError(f"{VERIFY_KEY}: the key is not an Ed25519 key")
    signature_file = directory / f"{manifest}{SIGNATURE_SUFFIX}"
    if not signature_file.is_file():
        raise ModelIntegrityError(
            f"{where}: the model is not signed ({manifest}{SIGNATURE_SUFFIX} is missing) and {VERIFY_KEY} asks "
            "for signed models; train it with DMLOPS_MODEL_SIGNING_KEY set"
        )
    try:
        signature = json.loads(signature_file.read_text())
        public.verify(base64.b64decode(signature["signature"]), text)
    except (InvalidSignature, ValueError, KeyError, TypeError):
        raise ModelIntegrityError(
            f"{where}: the signature of {manifest} does not verify with the key {_key_id(public)}: the model was "
            "changed after training or signed with another key; refusing the model"
        ) from None
    return document
