#!/usr/bin/env python3
"""Differential check: the shipped policies give the same decision in regorus (phigate) and OPA.

Evaluates every input of `probes.json` (the same corpus the gateway uses to check that its
bytecode VM agrees with the regorus interpreter) with OPA (the Go engine, via
`opa-golib-python-bindings`, OPA 1.20) and with phigate's evaluator (`cargo run --example eval`),
and compares `data.phigate.authz.decision`. Exits 0 when all agree, 1 on a difference, and 0 with
a SKIP message when the OPA package is absent. `--write-probes` regenerates `probes.json` from
the personas x requests below (add cases there, then regenerate).

    pip install --ignore-requires-python opa-golib-python-bindings
    python3 policies/opa_diff.py [--write-probes]
"""
import itertools
import json
import os
import pathlib
import subprocess
import sys
import tempfile

WRITE_PROBES = "--write-probes" in sys.argv[1:]

try:
    from opa_bindings import OpaEngine
except ImportError:
    if WRITE_PROBES:
        OpaEngine = None
    else:
        print("SKIP: opa-golib-python-bindings is not installed "
              "(pip install --ignore-requires-python opa-golib-python-bindings)")
        sys.exit(0)

try:
    import yaml
except ImportError:
    yaml = None

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent

PERSONAS = {
    "clinician_a": {"sub": "clinician_a", "tenant": "tenant-a", "roles": ["clinician"], "scopes": ["user/*.rs"]},
    "clinician_b": {"sub": "clinician_b", "tenant": "tenant-b", "roles": ["clinician"], "scopes": ["user/*.rs"]},
    "writer_a": {"sub": "clinician_a2", "tenant": "tenant-a", "roles": ["clinician"], "scopes": ["user/*.cruds"]},
    "er_doctor_a": {"sub": "er_doctor_a", "tenant": "tenant-a", "roles": ["clinician", "break_glass"], "scopes": ["user/*.rs"]},
    "psychiatrist_a": {"sub": "clinician_a", "tenant": "tenant-a", "roles": ["psychiatrist"], "scopes": ["user/*.rs"]},
    "scraper_a": {"sub": "scraper_a", "tenant": "tenant-a", "roles": ["analyst"], "scopes": ["user/*.read"]},
    "admin_a": {"sub": "admin_a", "tenant": "tenant-a", "roles": ["admin"], "scopes": ["user/*.read"]},
    "patient_app": {"sub": "p", "tenant": "tenant-a", "roles": [], "patient": "a-p3", "scopes": ["patient/*.read"]},
    "bulk": {"sub": "bulk", "tenant": "tenant-a", "roles": [], "scopes": ["system/*.read"]},
}


def op(interaction, rtype=None, patients=(), **kw):
    o = {"interaction": interaction, "patients": list(patients), "unresolved": [], "entries": []}
    if rtype:
        o["resource_type"] = rtype
    o.update(kw)
    return o


REQUESTS = {
    "read_a_p1": ("GET", op("read", "Patient", ["a-p1"], id="a-p1"), {}),
    "read_a_p3": ("GET", op("read", "Patient", ["a-p3"], id="a-p3"), {}),
    "read_b_p1": ("GET", op("read", "Patient", ["b-p1"], id="b-p1"), {}),
    "read_unknown": ("GET", op("read", "Patient", ["a-p404"], id="a-p404"), {}),
    "read_obs": ("GET", op("read", "Observation", [], id="o1"), {}),
    "search_obs": ("GET", op("search-type", "Observation"), {}),
    "search_obs_a_p4": ("GET", op("search-type", "Observation", ["a-p4"]), {}),
    "search_chained": ("GET", op("search-type", "Observation", unresolved=["subject:Patient.name"]), {}),
    "search_org": ("GET", op("search-type", "Organization"), {}),
    "search_device": ("GET", op("search-type", "Device"), {}),
    "system_search": ("GET", op("search-system"), {}),
    "everything_a_p1": ("GET", op("operation", "Patient", ["a-p1"], id="a-p1", operation="everything"), {}),
    "create_obs": ("POST", op("create", "Observation", ["a-p3"]), {}),
    "update_obs_a_p1": ("PUT", op("update", "Observation", ["a-p1"], id="o1"), {}),
    "conditional_delete_obs": ("DELETE", op("delete", "Observation"), {}),
    "batch_mixed": ("POST", op("batch", None, ["a-p1", "a-p3"], entries=[
        op("read", "Patient", ["a-p1"], id="a-p1"), op("read", "Patient", ["a-p3"], id="a-p3")]), {}),
    "export_sync": ("GET", op("operation", None, [], operation="export"), {}),
    "export_async": ("GET", op("operation", None, [], operation="export"), {"prefer": ["respond-async"]}),
    "break_glass_a_p5": ("GET", op("read", "Patient", ["a-p5"], id="a-p5"), {"break_glass_reason": "ED"}),
    "capabilities": ("GET", op("capabilities"), {}),
    # Through the bulk export URLs the gateway issued (input.request.bulk).
    "bulk_status": ("GET", op("operation", None, [], operation="export-poll-status"), {"bulk": "status"}),
    "bulk_cancel": ("DELETE", op("operation", None, [], operation="export-poll-status"), {"bulk": "status"}),
    "bulk_file": ("GET", op("read", "Binary", [], id="job-1-Observation"), {"bulk": "file"}),
}


def generated():
    for (pname, p), (rname, (method, fhir, extra)) in itertools.product(PERSONAS.items(), REQUESTS.items()):
        request = {"method": method, "route": "fhir", "tenant": p["tenant"], "fhir": fhir,
                   "patients": sorted(fhir["patients"]), "prefer": []}
        request.update(extra)
        yield f"{pname}.{rname}", {"v": 1, "principal": p, "request": request, "client": {}}
    yield "anonymous", {"v": 1, "request": {"method": "GET", "route": "fhir", "patients": [], "prefer": [],
                                            "fhir": op("read", "Patient", ["a-p1"], id="a-p1")}}
    # SMART discovery without a token (public), and a write of it (not).
    for method in ["GET", "POST"]:
        yield f"anonymous.capabilities_{method.lower()}", {"v": 1, "request": {
            "method": method, "route": "fhir", "patients": [], "prefer": [], "fhir": op("capabilities")}}
    # A further page of a stored search (HAPI `_getpages`), by a principal whose scopes cover
    # every type and by one whose scopes name a type.
    page = op("search-system", continuation=True)
    clinician = PERSONAS["clinician_a"]
    for name, principal in [("clinician_a", clinician),
                            ("clinician_a_observations_only", {**clinician, "scopes": ["user/Observation.rs"]})]:
        yield f"{name}.search_page", {"v": 1, "principal": principal, "request": {
            "method": "GET", "route": "fhir", "tenant": "tenant-a", "fhir": page, "patients": [],
            "prefer": []}, "client": {}}


def write_probes():
    lines = [f"{json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}" for k, v in generated()]
    (HERE / "probes.json").write_text("{\n" + ",\n".join(lines) + "\n}\n")
    print(f"wrote {len(lines)} probes to probes.json")


def corpus():
    return json.loads((HERE / "probes.json").read_text()).items()


def load_data():
    data = {"gateway": {"break_glass_role": "break_glass"}}
    for f in sorted((HERE / "data").iterdir()):
        if f.suffix == ".json":
            data.update(json.loads(f.read_text()))
        elif f.suffix in (".yaml", ".yml"):
            if yaml is None:
                print("SKIP: PyYAML is needed to read the YAML data files")
                sys.exit(0)
            data.update(yaml.safe_load(f.read_text()))
    return data


def main():
    if WRITE_PROBES:
        write_probes()
        return 0
    opa = OpaEngine()
    for f in sorted(HERE.glob("*.rego")):
        if not f.name.endswith("_test.rego"):
            opa.add_policy(f.name, f.read_text())
    opa.add_data(load_data())
    cases = list(corpus())
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for name, doc in cases:
            path = os.path.join(tmp, name + ".json")
            pathlib.Path(path).write_text(json.dumps(doc))
            files.append(path)
        out = subprocess.run(
            ["cargo", "run", "-q", "-p", "phigate-policy", "--example", "eval", "--", str(HERE), *files],
            cwd=ROOT, capture_output=True, text=True)
        ours = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    if len(ours) != len(cases):
        print("phigate evaluation failed:", out.stderr[-2000:])
        return 1
    diffs = 0
    for (name, doc), mine in zip(cases, ours):
        theirs = opa_eval(opa, doc)
        got = mine.get("result", {}).get("decision")
        if got != theirs:
            diffs += 1
            print(f"DIFF {name}\n  regorus: {json.dumps(got, sort_keys=True)}\n  opa:     {json.dumps(theirs, sort_keys=True)}")
    print(f"{len(cases) - diffs}/{len(cases)} decisions agree with OPA")
    return 1 if diffs else 0


def opa_eval(opa, doc):
    result = opa.eval_document("phigate.authz.decision", doc)
    if isinstance(result, dict) and set(result) == {"result"}:
        result = result["result"]
    return result


if __name__ == "__main__":
    sys.exit(main())
