"""SBOMs from a lock: SPDX 2.3 and CycloneDX 1.5 (JSON), deterministic.

Timestamps come from SOURCE_DATE_EPOCH, else from the newest repository metadata date in the lock
(never the wall clock); identifiers are derived from the lock digest, so the same lock gives the
same SBOM bytes.
"""

from __future__ import annotations

import json
import re
import time
import uuid

from cernvm_build import formats
from cernvm_build.errors import LockError
from cernvm_build.lock.lockfile import Closure, LockedPackage, lock_epoch
from cernvm_build.util.files import source_date_epoch

NAMESPACE = uuid.UUID("6f1d3c2e-8a51-4f0e-9a63-2c1f0b7d4e10")


def sbom_time(c: Closure) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(source_date_epoch(lock_epoch(c))))


def purl(c: Closure, p: LockedPackage) -> str:
    return formats.get(c.flavour, LockError).purl(c, p)


def _spdx_id(p: LockedPackage) -> str:
    return "SPDXRef-Package-" + re.sub(r"[^A-Za-z0-9.-]", "-", f"{p.name}-{p.arch}")


def _url(c: Closure, p: LockedPackage) -> str:
    repo = c.repository(p.repository)
    return f"{repo.url}/{p.location}" if repo else "NOASSERTION"


def to_spdx(c: Closure, lock_digest: str) -> str:
    when = sbom_time(c)
    doc = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{c.name} closure",
        "documentNamespace": f"https://cernvm-build.dev/spdx/{c.name}/{lock_digest.split(':')[-1]}",
        "creationInfo": {"created": when, "creators": ["Tool: cernvm-build"]},
        "packages": [],
        "relationships": [],
    }
    for p in c.packages:
        doc["packages"].append({
            "SPDXID": _spdx_id(p), "name": p.name, "versionInfo": p.evr,
            "downloadLocation": _url(c, p), "filesAnalyzed": False,
            "checksums": [{"algorithm": "SHA256", "checksumValue": p.sha256}],
            "licenseConcluded": "NOASSERTION", "licenseDeclared": "NOASSERTION", "copyrightText": "NOASSERTION",
            "supplier": "NOASSERTION",
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                              "referenceLocator": purl(c, p)}],
        })
    ids = {p.name: _spdx_id(p) for p in c.packages}
    for r in sorted(c.roots):
        if r in ids:
            doc["relationships"].append({"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
                                         "relatedSpdxElement": ids[r]})
    for p in c.packages:
        for d in p.depends:
            doc["relationships"].append({"spdxElementId": ids[p.name], "relationshipType": "DEPENDS_ON",
                                         "relatedSpdxElement": ids[d]})
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def to_cyclonedx(c: Closure, lock_digest: str) -> str:
    serial = uuid.uuid5(NAMESPACE, lock_digest)
    refs = {p.name: purl(c, p) for p in c.packages}
    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{serial}",
        "version": 1,
        "metadata": {
            "timestamp": sbom_time(c),
            "tools": [{"vendor": "cernvm-build", "name": "cernvm-build"}],
            "component": {"type": "operating-system", "bom-ref": f"closure:{c.name}", "name": c.name,
                          "version": lock_digest,
                          "hashes": [{"alg": "SHA-256", "content": lock_digest.split(":")[-1]}]},
        },
        "components": [
            {"type": "library", "bom-ref": refs[p.name], "name": p.name, "version": p.evr, "purl": refs[p.name],
             "hashes": [{"alg": "SHA-256", "content": p.sha256}],
             "externalReferences": [{"type": "distribution", "url": _url(c, p)}]}
            for p in c.packages
        ],
        "dependencies": [{"ref": f"closure:{c.name}", "dependsOn": sorted(refs[r] for r in c.roots if r in refs)}] + [
            {"ref": refs[p.name], "dependsOn": sorted(refs[d] for d in p.depends)} for p in c.packages],
    }
    return json.dumps(bom, indent=2, sort_keys=True) + "\n"
