"""JUnit XML for CI: a testsuite per agency, a testcase per check.

fail -> <failure>, error -> <error>, skip -> <skipped>; a warning passes and is told in
<system-out>.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from ..sweep import SweepResult

STATUS_ELEMENT = {"fail": "failure", "error": "error", "skip": "skipped"}
# Characters XML 1.0 forbids (ElementTree writes them as they are: a document no CI reads).
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(value: object) -> str:
    """Text that XML 1.0 allows: a forbidden character becomes its visible escape."""
    return NOT_XML.sub(lambda m: ascii(m.group())[1:-1], str(value))


def render(sweep: SweepResult) -> str:
    stamp = sweep.started_at.isoformat(timespec="seconds")
    root = ET.Element("testsuites", name="provisioner sweep", time=f"{sweep.duration:.3f}")
    totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    for record in sweep.records:
        suite = _suite(record, stamp)
        root.append(suite)
        for key in totals:
            totals[key] += int(suite.get(key))
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _suite(record: dict, stamp: str) -> ET.Element:
    name = xml_text(record["agency"] or record["url"])
    checks = record["checks"]
    counts = {s: sum(1 for c in checks if c["status"] == s) for s in STATUS_ELEMENT}
    suite = ET.Element("testsuite", name=name, tests=str(len(checks)),
                       failures=str(counts["fail"]), errors=str(counts["error"]),
                       skipped=str(counts["skip"]), timestamp=stamp)
    properties = ET.SubElement(suite, "properties")
    for key, value in (("url", record["url"]), ("active", record["active"]),
                       ("publication_score", record["publication"]["score"]),
                       ("cert_days_left", record["cert"]["days_left"])):
        ET.SubElement(properties, "property", name=key, value=xml_text(value))
    for check in checks:
        case = ET.SubElement(suite, "testcase", name=check["id"],
                             classname=f"{name}.{check['id'].split('.')[0]}")
        element = STATUS_ELEMENT.get(check["status"])
        if element:
            ET.SubElement(case, element, message=xml_text(check["detail"]))
        elif check["status"] == "warn":
            ET.SubElement(case, "system-out").text = f"warning: {xml_text(check['detail'])}"
    return suite
