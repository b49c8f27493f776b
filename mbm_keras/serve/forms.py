"""Reading requests: the body within its limit, the media type, and multipart forms (file uploads)."""

from mbm_keras.serve.servable import RequestError


async def read_body(request, limit):
    """The body, read up to `limit` bytes (a client may send more than its Content-Length says).

    Examples:
        >>> body = await read_body(request, 32 * 1024 * 1024)
    """
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"the request body is over the limit of {limit:,} bytes", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def check_media_type(request, expected):
    """415 unless the request's Content-Type is one of `expected`."""
    given = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if given not in expected:
        raise RequestError(f"Content-Type {given or 'none'!r}: this endpoint takes {' or '.join(expected)}",
                           field="content-type", status=415)


async def read_form(request, limit):
    """A form's fields as a list of `(name, value)`: bytes for an uploaded file, str for a text field. Multipart
    (`curl -F`, files and texts) or URL-encoded (`curl -d`, texts only); 415 for another media type, 413 over
    `limit`.

    Examples:
        >>> fields = await read_form(request, options.max_body_bytes)
        >>> dict(fields)["image"][:4]
        b'\\x89PNG'
    """
    from urllib.parse import parse_qsl

    from fastapi import Request

    check_media_type(request, FORM_TYPES)
    body = await read_body(request, limit)
    if request.headers.get("content-type", "").lower().startswith("application/x-www-form-urlencoded"):
        try:  # texts only: parsed here, at a fraction of the multipart parser's cost
            return parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
        except (UnicodeDecodeError, ValueError) as e:
            raise RequestError(f"the form is not URL-encoded UTF-8: {e}", status=400) from None

    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form()
    fields = []
    for key, value in form.multi_items():
        fields.append((key, await value.read() if hasattr(value, "read") else value))  # an upload, or a text field
    return fields


def split_fields(fields, options, inputs):
    """`(input values, option values)` of a form: `options` names the fields that are settings (`top`, `k`,
    `candidates`, ...; a list when repeated), `inputs` the model's inputs; any other field is a 422 naming it."""
    values, settings = {}, {}
    for key, value in fields:
        if key in options:
            settings.setdefault(key, []).append(value)
        elif key in inputs:
            if key in values:
                raise RequestError(f"input {key!r} is given twice", field=key)
            values[key] = value
        else:
            raise RequestError(f"no field {key!r} here; this endpoint takes {', '.join([*inputs, *options])}", field=key)
    return values, settings


def whole_number(settings, key, default, low=1, high=None):
    """The form setting `key` as an int in [low, high] (`default` when absent); 422 naming it otherwise."""
    given = settings.get(key)
    if not given:
        return default
    value = given[-1]
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    if not text.strip().isdigit() or int(text) < low or (high is not None and int(text) > high):
        bounds = f">= {low}" if high is None else f"from {low} to {high}"
        raise RequestError(f"{key} must be a whole number {bounds}. Received: {text!r}", field=key)
    return int(text)


def text_setting(settings, key):
    """The form setting `key` as one string, or None."""
    given = settings.get(key)
    if not given:
        return None
    value = given[-1]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
