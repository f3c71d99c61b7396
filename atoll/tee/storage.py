"""Where encrypted data files live: a local folder or an S3-compatible bucket.

Locations are URLs: ``file:///abs/folder/name`` (or a plain path) and
``s3://bucket/key``. S3 goes through boto3 (``pip install 'atoll[s3]'``), which reads
credentials and the endpoint the usual way (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``
for MinIO / Ceph / a local server, ...). Reads are streams: the enclave pulls one chunk
at a time and never holds a whole object unless told to.

What each party sees: the storage holds ciphertext and the file's public header only.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlparse

from atoll.errors import ConfigError, DataError


def _s3():
    try:
        import boto3
    except ImportError:
        raise ConfigError("s3:// locations need boto3: pip install 'atoll[s3]'") from None
    return boto3.client("s3")


def _split(url: str) -> tuple[str, str, str]:
    """(scheme, bucket or '', path or key)."""
    u = urlparse(url)
    if u.scheme == "s3":
        if not u.netloc or not u.path.strip("/"):
            raise ConfigError(f"{url!r}: write s3://BUCKET/KEY")
        return "s3", u.netloc, u.path.lstrip("/")
    if u.scheme == "file":
        return "file", "", unquote(u.path)
    if u.scheme in ("", None) or len(u.scheme) == 1:  # a plain path (or a Windows drive letter)
        return "file", "", url
    raise ConfigError(f"unsupported storage location {url!r}: use a folder path, file://... or s3://BUCKET/KEY")


def join(base: str, name: str) -> str:
    """The location of ``name`` inside the folder / bucket prefix ``base``."""
    scheme, bucket, path = _split(base) if base.startswith(("s3://", "file://")) else ("file", "", base)
    if scheme == "s3":
        return f"s3://{bucket}/{path.rstrip('/') + '/' if path else ''}{name}"
    return str(Path(path) / name)


def upload(src: str | Path, location: str) -> str:
    """Copy a local file to ``location``; return the location."""
    scheme, bucket, path = _split(location)
    if scheme == "s3":
        with open(src, "rb") as f:
            _s3().upload_fileobj(f, bucket, path)
    else:
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if Path(src).resolve() != dest.resolve():
            shutil.copyfile(src, dest)
    return location


def open_read(location: str) -> IO[bytes]:
    """A binary stream of the object at ``location`` (read it in chunks)."""
    scheme, bucket, path = _split(location)
    if scheme == "s3":
        try:
            return _s3().get_object(Bucket=bucket, Key=path)["Body"]
        except Exception as e:  # botocore's errors: say which step, not the credentials
            raise DataError(f"cannot read an encrypted data object from S3: {type(e).__name__}") from None
    try:
        return open(path, "rb")
    except OSError as e:
        raise DataError(f"cannot read an encrypted data file: {e.strerror}") from None
