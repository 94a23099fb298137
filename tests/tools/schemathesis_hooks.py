"""schemathesis hooks for tests/openapi.rs (loaded through tests/tools/schemathesis.toml)."""

import schemathesis

# tus PATCH bodies are raw bytes under their own media type.
schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
