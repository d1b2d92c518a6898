"""Options of ``pinecone://INDEX?namespace=N``.

The API key comes from ``PINECONE_API_KEY`` or ``?api_key_env=VAR`` / ``?api_key_file=PATH``.
``host=`` names the index's data-plane host directly (otherwise the control plane is asked);
``control_host=`` points the control plane elsewhere (a local emulator, a proxy).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vecmigrate.errors import ConfigError
from vecmigrate.uri import ConnectorURI, secret

INDEX_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,43}[a-z0-9])?$")
SPARSE_CHOICES = ("auto", "true", "false")


@dataclass(frozen=True)
class PineconeConfig:
    index: str
    namespace: str | None  # None: every namespace, one partition each
    namespace_field: str  # column carrying the namespace when every namespace is read
    document_key: str  # metadata key that holds the record's document
    sparse: str  # auto: a sparse column for sparse and dotproduct indexes; true; false
    host: str | None
    control_host: str | None
    cloud: str
    region: str
    pod_environment: str | None  # set with pod_type: create a pod-based index
    pod_type: str | None
    sample: int  # records read by describe() to learn the metadata keys and types
    max_batch: int
    api_key: str | None

    @classmethod
    def from_uri(cls, uri: ConnectorURI) -> PineconeConfig:
        uri.check_options(
            {
                "namespace",
                "namespace_field",
                "document_key",
                "sparse",
                "host",
                "control_host",
                "cloud",
                "region",
                "environment",
                "pod_type",
                "sample",
                "max_batch",
            }
        )
        index = ((uri.host or "") + uri.path).strip("/")
        if not INDEX_NAME.match(index):
            raise ConfigError(
                f"pinecone:// URI needs an index name (lowercase letters, digits and -, at most "
                f"45 characters) as its host: pinecone://my-index?namespace=N, got {index!r}"
            )
        sparse = (uri.option("sparse") or "auto").lower()
        if sparse not in SPARSE_CHOICES:
            raise ConfigError(
                f"pinecone: sparse={sparse!r}: use one of {', '.join(SPARSE_CHOICES)}"
            )
        environment, pod_type = uri.option("environment"), uri.option("pod_type")
        if bool(environment) != bool(pod_type):
            raise ConfigError("pinecone: a pod-based index needs both environment= and pod_type=")
        max_batch = uri.int_option("max_batch", 200)
        if not 0 < max_batch <= 1000:
            raise ConfigError("pinecone: max_batch must be between 1 and 1000")
        namespace = uri.option("namespace")
        return cls(
            index=index,
            namespace=None if namespace is None else namespace,
            namespace_field=uri.option("namespace_field") or "_namespace",
            document_key=uri.option("document_key") or "document",
            sparse=sparse,
            host=uri.option("host") or None,
            control_host=uri.option("control_host") or None,
            cloud=uri.option("cloud") or "aws",
            region=uri.option("region") or "us-east-1",
            pod_environment=environment,
            pod_type=pod_type,
            sample=max(1, uri.int_option("sample", 1000)),
            max_batch=max_batch,
            api_key=secret(uri, "api_key", env_default="PINECONE_API_KEY"),
        )
