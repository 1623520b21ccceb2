"""Turn a CustomResourceDefinition's openAPIV3Schema into a JSON Schema for offline checks.

    python deploy/k8s/crds/crd_to_jsonschema.py CRD.yaml --source "owner/repo@tag:path"

writes `deploy/k8s/crds/<group>_<kind>_<version>.json` for every served version. The tests
validate rendered manifests against these files; nothing is fetched at test time.

What the conversion does, so that a schema rejects what the API server would:
- `nullable: true` becomes a `null` type alternative;
- an object with `properties` and neither `additionalProperties` nor
  `x-kubernetes-preserve-unknown-fields` gets `additionalProperties: false` — the API
  server prunes (or, with strict field validation, rejects) unknown fields, so a typo
  such as `maxReplicas` for `maxReplicaCount` must fail here instead of vanishing there;
- `apiVersion` and `kind` are pinned to the CRD's group/version and kind.
CEL rules (`x-kubernetes-validations`) are not evaluated; the tests check the ones that
matter for MemberPulse (min ≤ max replicas) themselves.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent


def convert(node: Any) -> Any:
    """An openAPIV3Schema node (recursively) as a strict JSON Schema node."""
    if isinstance(node, list):
        return [convert(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: convert(value) for key, value in node.items()}
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    preserve = out.get("x-kubernetes-preserve-unknown-fields") is True
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


def schemas(crd: dict[str, Any], source: str, digest: str) -> dict[str, dict[str, Any]]:
    """File name → JSON Schema for each served version of a CRD."""
    spec = crd["spec"]
    group, kind = spec["group"], spec["names"]["kind"]
    out: dict[str, dict[str, Any]] = {}
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        schema = convert(version["schema"]["openAPIV3Schema"])
        schema["properties"]["apiVersion"] = {"const": f"{group}/{version['name']}"}
        schema["properties"]["kind"] = {"const": kind}
        schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind"})
        head = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$comment": f"from {source} (sha256 {digest}) by crd_to_jsonschema.py",
            "title": f"{kind} {group}/{version['name']}",
        }
        out[f"{group}_{kind.lower()}_{version['name']}.json"] = head | schema
    return out


def main() -> None:
    """Convert the CRD file given on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("crd", type=Path, help="a CustomResourceDefinition YAML file")
    parser.add_argument("--source", required=True, help="where the file came from")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    raw = args.crd.read_bytes()
    crd = yaml.safe_load(raw)
    for name, schema in schemas(crd, args.source, hashlib.sha256(raw).hexdigest()).items():
        (args.out / name).write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
        print(args.out / name)


if __name__ == "__main__":
    main()
