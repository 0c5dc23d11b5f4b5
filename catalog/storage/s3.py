"""The S3/MinIO backend: objects in one bucket through the ``minio`` SDK.

In its own module, as each backend is, so the package's ``__init__`` holds only the
contract; ``minio`` and ``urllib3`` are imported where a method needs them, so a
deployment on the local-folder backend never loads them.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qs, unquote, urlsplit

from catalog.storage import (
    BucketMissing,
    ObjectNotFound,
    StorageError,
    StoredObject,
    _validate_prefix,
    validate_key,
)
from catalog.suspicion import Suspicion

logger = logging.getLogger(__name__)

# Seconds. A MinIO on the same network connects in milliseconds and sends a 100 KB image
# in well under one; these bound what a hung endpoint can cost one request.
S3_CONNECT_TIMEOUT = 2.0
S3_READ_TIMEOUT = 5.0


def _not_waiting() -> StorageError:
    return StorageError(
        "the S3 endpoint did not answer a recent request and another request is checking "
        "it: not waiting"
    )


class S3Storage:
    """Objects in an S3 bucket through the ``minio`` SDK (MinIO in production, moto in tests).

    The bucket is created on first write if it does not exist. The HTTP client has short
    timeouts and no retries of its own (``S3_CONNECT_TIMEOUT``, ``S3_READ_TIMEOUT``): a
    hung endpoint costs a request seconds, not the minutes that three 30 s reads with
    backoff took, and ``/healthz`` answers 503 promptly. Ingest retries failed uploads
    itself, with backoff (``INGEST_UPLOAD_RETRIES``), so nothing is lost there.
    """

    def __init__(self, client: object, bucket: str) -> None:
        from minio import Minio

        if not isinstance(client, Minio):
            raise TypeError("client must be a minio.Minio")
        self.client = client
        self.bucket = bucket
        self._bucket_ready = False
        self._lock = threading.Lock()
        self.suspicion = Suspicion()

    @classmethod
    def from_url(cls, url: str) -> S3Storage:
        """``s3://ACCESS:SECRET@host:9000/bucket[?secure=true][&region=us-east-1]``."""
        import urllib3
        from minio import Minio

        parts = urlsplit(url)
        if parts.scheme != "s3":
            raise ValueError(f"expected an s3:// URL, got {parts.scheme!r}")
        if not parts.hostname:
            raise ValueError("s3 URL needs a host: s3://ACCESS:SECRET@host:9000/bucket")
        bucket = parts.path.strip("/")
        if not bucket or "/" in bucket:
            raise ValueError("s3 URL path must be exactly one bucket name: …@host:9000/bucket")
        from minio.helpers import check_bucket_name

        check_bucket_name(bucket)  # ValueError naming the bucket: fail at start-up
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"secure", "region"}
        if unknown:
            raise ValueError(f"unknown s3 URL option(s): {', '.join(sorted(unknown))}")
        secure_text = query.get("secure", "false").lower()
        if secure_text not in ("true", "false", "1", "0"):
            raise ValueError("secure must be true or false")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"bad port in s3 URL: {exc}") from None
        endpoint = parts.hostname if port is None else f"{parts.hostname}:{port}"
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=S3_CONNECT_TIMEOUT, read=S3_READ_TIMEOUT),
            maxsize=16,
            retries=urllib3.Retry(total=0, connect=0, read=0, redirect=0, status=0),
        )
        client = Minio(
            endpoint,
            access_key=unquote(parts.username) if parts.username else None,
            secret_key=unquote(parts.password) if parts.password else None,
            secure=secure_text in ("true", "1"),
            region=query.get("region") or None,
            http_client=http,
        )
        return cls(client, bucket)

    def __repr__(self) -> str:
        return f"S3Storage(bucket={self.bucket!r})"

    @contextmanager
    def _errors(self, key: str | None = None) -> Iterator[None]:
        """Map the SDK's and urllib3's exceptions onto the Protocol's two exceptions.

        An endpoint that failed to answer (a timeout, a refused or dropped connection) is
        suspect (``catalog.suspicion``): one call at a time tries it, the others raise at
        once instead of each holding a worker thread for the whole timeout.
        """
        from minio.error import MinioException, S3Error
        from urllib3.exceptions import HTTPError

        with self.suspicion.call(_not_waiting):
            try:
                yield
                self.suspicion.answered()
            except S3Error as exc:
                self.suspicion.answered()  # the endpoint answered, with an error
                if exc.code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject", "ResourceNotFound"):
                    raise ObjectNotFound(key or self.bucket) from None
                raise StorageError(f"S3 error on {key or self.bucket!r}: {exc.code}") from exc
            except (MinioException, HTTPError, OSError) as exc:
                # HTTPError covers urllib3's MaxRetryError when the endpoint is down.
                self.suspicion.silent()
                raise StorageError(f"S3 endpoint failed on {key or self.bucket!r}: {exc}") from exc

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        with self._lock, self._errors():
            if not self._bucket_ready:
                if not self.client.bucket_exists(self.bucket):
                    from minio.error import S3Error

                    try:
                        self.client.make_bucket(self.bucket)
                        logger.info("created bucket %s", self.bucket)
                    except S3Error as exc:  # another process won the race
                        if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                            raise
                self._bucket_ready = True

    def put(self, key: str, data: bytes, content_type: str) -> None:
        validate_key(key)
        self._ensure_bucket()
        with self._errors(key):
            # S3 PUTs replace objects atomically: readers never see a partial object.
            self.client.put_object(
                self.bucket, key, io.BytesIO(data), len(data), content_type=content_type
            )

    def get(self, key: str) -> bytes:
        validate_key(key)
        response = None
        with self._errors(key):
            try:
                response = self.client.get_object(self.bucket, key)
                return response.read()
            finally:
                if response is not None:
                    response.close()
                    response.release_conn()

    def exists(self, key: str) -> bool:
        validate_key(key)
        try:
            with self._errors(key):
                self.client.stat_object(self.bucket, key)
        except ObjectNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        validate_key(key)
        try:
            with self._errors(key):
                self.client.remove_object(self.bucket, key)
        except ObjectNotFound:
            pass  # S3 deletes are idempotent; a missing bucket holds nothing to delete

    def keys(self, prefix: str = "") -> Iterator[str]:
        return (stored.key for stored in self.objects(prefix))

    def objects(self, prefix: str = "") -> Iterator[StoredObject]:
        _validate_prefix(prefix)
        try:
            with self._errors(prefix or None):
                for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
                    modified = obj.last_modified.timestamp() if obj.last_modified else 0.0
                    yield StoredObject(obj.object_name, int(obj.size or 0), modified)
        except ObjectNotFound:
            return  # no bucket yet: no keys

    def ping(self) -> None:
        """The endpoint answers and the bucket exists: with the bucket gone every image
        is a 404, so a health check that only reached the endpoint would say OK wrongly."""
        with self._errors():
            exists = self.client.bucket_exists(self.bucket)
        if not exists:
            raise BucketMissing(
                f"bucket {self.bucket!r} does not exist on the S3 endpoint: create it "
                "(deploy/docker-compose.yml's createbucket does), or let ingest create it"
            )
