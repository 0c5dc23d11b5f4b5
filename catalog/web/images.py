"""Image bytes under stable URLs: ``/img/<key>``, or ``FACECAT_PUBLIC_BASE_URL + key``.

Objects never change once written (a new image gets a new key), so responses are cached
for a year as ``immutable`` with a strong ETag; a revalidation costs a 304. Only keys
under ``faces/`` and ``thumbs/`` are served, so other objects in a shared bucket stay
private, and keys are validated by ``catalog.storage.validate_key`` before any backend
sees them, so ``..`` and friends are rejected with a 400.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from urllib.parse import quote

from flask import Blueprint, Response, current_app, has_request_context, request, url_for

from catalog.access.limits import IMAGES, limited
from catalog.errors import ApiError
from catalog.services import find_service
from catalog.storage import InvalidKey, ObjectNotFound, Storage, validate_key
from ingest.ports import FACES_PREFIX, THUMBS_PREFIX

bp = Blueprint("images", __name__)

ONE_YEAR = 31536000
_CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".png": "image/png",
}


def content_type_for(key: str) -> str:
    """MIME type from the key's extension (the local backend keeps no metadata)."""
    return _CONTENT_TYPES.get(PurePosixPath(key).suffix.lower(), "application/octet-stream")


# What request.root_url is computed from (werkzeug.sansio.utils.get_current_url/get_host).
_ROOT_URL_INPUTS = (
    "wsgi.url_scheme",
    "HTTP_HOST",
    "SERVER_NAME",
    "SERVER_PORT",
    "SCRIPT_NAME",
)
_MAX_URL_BASES = 64
_url_bases: dict[tuple[object, ...], str] = {}


def url_base() -> str:
    """The prefix of every image URL: ``FACECAT_PUBLIC_BASE_URL/`` or this app's ``/img/``.

    Computed once per response and reused for both URLs of each face: building them with
    ``url_for`` cost more than the database query on the serving path.
    """
    base = current_app.config.get("PUBLIC_BASE_URL")
    if base:
        return base.rstrip("/") + "/"
    if has_request_context():
        # The same host, script root and scheme url_for(..., _external=True) would use.
        # request.root_url is rebuilt for every request (IRI decoding included), which was
        # a tenth of serving a face; it depends only on these environ values.
        environ = request.environ
        where = tuple(environ.get(name) for name in _ROOT_URL_INPUTS)
        base = _url_bases.get(where)
        if base is None:
            base = f"{request.root_url}img/"
            if len(_url_bases) < _MAX_URL_BASES:  # Host is client-chosen: bound the memory
                _url_bases[where] = base
        return base
    return url_for("images.image", key="_", _external=True)[:-1]  # needs SERVER_NAME


def image_url(key: str, base: str | None = None) -> str:
    """The absolute, never-expiring URL of a stored image."""
    return (base or url_base()) + quote(key)


@bp.get("/img/<path:key>")
@limited(IMAGES)
def image(key: str) -> Response:
    """The stored bytes, with ETag and one-year immutable caching; 304 on If-None-Match."""
    try:
        validate_key(key)
    except InvalidKey as exc:
        raise ApiError(400, "invalid_key", str(exc), key=key) from None
    if not key.startswith((FACES_PREFIX, THUMBS_PREFIX)):
        raise ApiError(404, "not_found", "Only faces/ and thumbs/ images are served.", key=key)
    try:
        data = find_service(Storage).get(key)
    except ObjectNotFound:
        raise ApiError(404, "not_found", "No image is stored under this key.", key=key) from None
    response = Response(data, mimetype=content_type_for(key))
    response.add_etag()
    response.cache_control.public = True
    response.cache_control.max_age = ONE_YEAR
    response.cache_control.immutable = True
    return response.make_conditional(request)
