"""Per-user record storage that never mistakes an error for "nothing there".

Every record lives under ``users/{user_id}/...``. A read returns the bytes,
raises ``RecordNotFound`` when the record does not exist, and raises
``StorageError`` for anything else (permissions, I/O, network, throttling).
Callers turn ``RecordNotFound`` into "none yet" and let ``StorageError``
surface as a server error, so an unreadable record is never replaced by
defaults.

Upstream's ``FileStore`` cannot be used for this: its S3 backend reports every
failure as ``FileNotFoundError``.

Configuration (``SANDPORT_USER_DATA``):

``file:///srv/openhands/sandport`` or a plain absolute path
    a local directory (the default is ``{persistence dir}/sandport``);
``s3://bucket/prefix``
    an S3 bucket (credentials from the usual boto3 environment).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import threading
from abc import ABC, abstractmethod
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from sandport_openhands.identity import validate_user_id


class RecordNotFound(Exception):
    """The record does not exist (and nothing went wrong finding that out)."""


class StorageError(Exception):
    """The store could not answer. Never to be read as "empty"."""


def _check_key(key: str) -> list[str]:
    parts = key.split('/')
    for part in parts:
        if part in ('', '.', '..') or '\\' in part or '\x00' in part:
            raise ValueError(f'invalid storage key {key!r}')
    return parts


def user_prefix(user_id: str) -> str:
    return f'users/{validate_user_id(user_id)}'


class UserDataStore(ABC):
    """Keys are relative, '/'-separated, built only from validated parts."""

    @abstractmethod
    def read(self, key: str) -> bytes:
        """The record's bytes; RecordNotFound or StorageError otherwise."""

    @abstractmethod
    def write(self, key: str, data: bytes) -> None:
        """Replace the record atomically; StorageError on failure."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Names of the direct children of ``prefix`` ([] when there is none)."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether a record exists at ``key``; StorageError when unknown."""

    @abstractmethod
    def delete_tree(self, prefix: str) -> bool:
        """Delete ``prefix`` and everything below; False if nothing was there."""

    @abstractmethod
    def create(self, key: str, data: bytes) -> bool:
        """Write the record only if none exists, atomically; False when one did."""


class LocalDirStore(UserDataStore):
    """A directory on a local or network file system.

    Directories are created 0700 and files 0600: the records hold secrets.
    Writes go to a temporary file that is fsynced and renamed over the record.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*_check_key(key))

    def read(self, key: str) -> bytes:
        path = self._path(key)
        try:
            with open(path, 'rb') as f:
                return f.read()
        except FileNotFoundError:
            raise RecordNotFound(key) from None
        except OSError as e:
            raise StorageError(f'cannot read {key}: {e.strerror or e}') from e

    def _staged(self, key: str, data: bytes, publish: Callable[[str, Path], None]) -> None:
        """Writes `data` to a synced temporary file next to the record, then `publish`es it
        (rename or link); the temporary name never outlives the call."""
        path = self._path(key)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix='.tmp-', dir=path.parent)
        try:
            with os.fdopen(fd, 'wb') as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            publish(tmp, path)
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass

    def write(self, key: str, data: bytes) -> None:
        try:
            self._staged(key, data, os.replace)
        except OSError as e:
            raise StorageError(f'cannot write {key}: {e.strerror or e}') from e

    def create(self, key: str, data: bytes) -> bool:
        try:
            # link() fails if the name exists: of two writers, exactly one wins
            self._staged(key, data, os.link)
        except FileExistsError:
            return False
        except OSError as e:
            raise StorageError(f'cannot create {key}: {e.strerror or e}') from e
        return True

    def list(self, prefix: str) -> list[str]:
        path = self._path(prefix)
        try:
            names = os.listdir(path)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise StorageError(f'cannot list {prefix}: {e.strerror or e}') from e
        return sorted(n for n in names if not n.startswith('.'))

    def exists(self, key: str) -> bool:
        path = self._path(key)
        try:
            os.stat(path)
        except FileNotFoundError:
            return False
        except OSError as e:
            if e.errno == errno.ENOTDIR:
                return False
            raise StorageError(f'cannot stat {key}: {e.strerror or e}') from e
        return True

    def delete_tree(self, prefix: str) -> bool:
        path = self._path(prefix)
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                os.unlink(path)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise StorageError(f'cannot delete {prefix}: {e.strerror or e}') from e
        return True


class S3Store(UserDataStore):
    """An S3 bucket. Only ``NoSuchKey``/404 means "not found"."""

    def __init__(self, bucket: str, prefix: str = '', client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip('/')
        self._client = client
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                import boto3

                self._client = boto3.client('s3')
            return self._client

    def _key(self, key: str) -> str:
        _check_key(key)
        return f'{self.prefix}/{key}' if self.prefix else key

    @staticmethod
    def _code(e: Exception) -> str:
        response = getattr(e, 'response', None) or {}
        return str(response.get('Error', {}).get('Code', ''))

    def read(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            with response['Body'] as body:
                data: bytes = body.read()
                return data
        except Exception as e:
            if self._code(e) in ('NoSuchKey', '404'):
                raise RecordNotFound(key) from None
            raise StorageError(f'cannot read {key}: {e}') from e

    def write(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except Exception as e:
            raise StorageError(f'cannot write {key}: {e}') from e

    def create(self, key: str, data: bytes) -> bool:
        try:
            # a conditional write: S3 refuses it with 412 when the key exists
            self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch='*'
            )
        except Exception as e:
            if self._code(e) in ('PreconditionFailed', '412', 'ConditionalRequestConflict'):
                return False
            raise StorageError(f'cannot create {key}: {e}') from e
        return True

    def list(self, prefix: str) -> list[str]:
        full = self._key(prefix) + '/'
        names: set[str] = set()
        try:
            paginator = self.client.get_paginator('list_objects_v2')
            for page in paginator.paginate(
                Bucket=self.bucket, Prefix=full, Delimiter='/'
            ):
                for common in page.get('CommonPrefixes') or []:
                    names.add(common['Prefix'][len(full) :].rstrip('/'))
                for obj in page.get('Contents') or []:
                    names.add(obj['Key'][len(full) :])
        except Exception as e:
            raise StorageError(f'cannot list {prefix}: {e}') from e
        return sorted(n for n in names if n and not n.startswith('.'))

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as e:
            if self._code(e) in ('NoSuchKey', '404', 'NotFound'):
                return False
            raise StorageError(f'cannot stat {key}: {e}') from e
        return True

    def delete_tree(self, prefix: str) -> bool:
        base = self._key(prefix)
        try:
            keys: list[str] = []
            paginator = self.client.get_paginator('list_objects_v2')
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base + '/'):
                keys.extend(obj['Key'] for obj in page.get('Contents') or [])
            if self.exists(prefix):
                keys.append(base)
            for i in range(0, len(keys), 1000):
                self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={'Objects': [{'Key': k} for k in keys[i : i + 1000]]},
                )
        except StorageError:
            raise
        except Exception as e:
            raise StorageError(f'cannot delete {prefix}: {e}') from e
        return bool(keys)


def store_from_url(url: str) -> UserDataStore:
    if url.startswith('s3://'):
        bucket, _, prefix = url[len('s3://') :].partition('/')
        if not bucket:
            raise ValueError(f'SANDPORT_USER_DATA={url!r}: no bucket')
        return S3Store(bucket, prefix)
    if url.startswith('file://'):
        url = url[len('file://') :]
    if not os.path.isabs(url):
        raise ValueError(f'SANDPORT_USER_DATA={url!r}: not an absolute path')
    return LocalDirStore(url)


def _default_url() -> str:
    base = (
        os.environ.get('OH_PERSISTENCE_DIR')
        or os.environ.get('FILE_STORE_PATH')
        or str(Path.home() / '.openhands')
    )
    if not os.path.isabs(base):
        raise ValueError(
            'set SANDPORT_USER_DATA: the persistence directory '
            f'{base!r} is not a local absolute path'
        )
    return os.path.join(base, 'sandport')


@lru_cache(maxsize=1)
def default_store() -> UserDataStore:
    """The process-wide store named by ``SANDPORT_USER_DATA``."""
    return store_from_url(os.environ.get('SANDPORT_USER_DATA') or _default_url())
