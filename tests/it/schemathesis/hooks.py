"""schemathesis hooks for the suite's run (tests/it/ops.rs, `SCHEMATHESIS_HOOKS`).

`POST /containers/{cuid}/upload-zip` takes `application/zip`, for which schemathesis has no
serializer: the generated body (a string, as the document says) becomes the content of one
file in a real ZIP, so the upload is exercised with valid archives of generated content.
"""
import io
import zipfile

import schemathesis
from schemathesis.transport.requests import REQUESTS_TRANSPORT


def _zip(value):
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogatepass")
    elif not isinstance(value, (bytes, bytearray)):
        # Not what the document allows (a negative case): sent as it is, not as a ZIP, so
        # the server's refusal is what is checked.
        return repr(value).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("fuzzed/body.bin", bytes(value))
    return out.getvalue()


@REQUESTS_TRANSPORT.serializer("application/zip")
def zip_serializer(ctx, value):
    return {"data": _zip(value)}
