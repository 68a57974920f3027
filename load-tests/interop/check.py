#!/usr/bin/env python3
"""phigate in front of a real FHIR server: the checks of load-tests/interop/run.

    check.py prepare RUN_DIR PATIENTS_JSON GATEWAY_PORT ADMIN_PORT UPSTREAM_PORT
    check.py check RUN_DIR

`prepare` edits the demo directory RUN_DIR/demo: the gateway listens on GATEWAY_PORT and forwards
to the Medplum server on UPSTREAM_PORT; the Synthea patients join tenant-a's policy data; three
interop principals get care teams. `check` sends every request below through the gateway, with
tokens signed by the demo's dev issuer, and compares what comes back with what the policies say.
Exit status 1 when any check fails. Traffic goes to 127.0.0.1 only.
"""
import base64
import gzip
import json
import re
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

HERE = Path(__file__).resolve().parent
OWN_FILE, FOREIGN_FILE = "Laila_Gorczany_1766a601.json.gz", "Markus_Jacobi_fd24ba28.json.gz"
# sub -> (roles, scope, on the care team of the "own" patient)
PRINCIPALS = {
    "interop_clinician": (["clinician"], "user/*.rs"),
    "interop_writer": (["clinician"], "user/*.cruds"),
    "interop_service": ([], "system/*.cruds"),
}


def prepare(run, patients_json, gw_port, admin_port, up_port):
    demo = run / "demo"
    patients = json.loads(patients_json)
    own, foreign = patients[OWN_FILE], patients[FOREIGN_FILE]
    data = demo / "policies" / "data"
    tenants = json.loads((data / "tenants.json").read_text())
    for p in (own, foreign):
        tenants["patients"][p] = {"tenant": "tenant-a"}
    (data / "tenants.json").write_text(json.dumps(tenants))
    teams = (data / "care_teams.yaml").read_text()
    lines = "".join(f"    {sub}: [{own}]\n" for sub in ("interop_clinician", "interop_writer"))
    teams = teams.replace("  tenant-a:\n", "  tenant-a:\n" + lines, 1)
    (data / "care_teams.yaml").write_text(teams)
    cfg = (demo / "config.yaml").read_text()
    cfg = re.sub(r"(listeners:\n  - name: demo\n    address: )127\.0\.0\.1:\d+", rf"\g<1>127.0.0.1:{gw_port}", cfg)
    cfg = re.sub(r"(admin:\n  address: )127\.0\.0\.1:\d+", rf"\g<1>127.0.0.1:{admin_port}", cfg)
    cfg = re.sub(r"(address: )127\.0\.0\.1:\d+(\n    sni: fhir-upstream)", rf"\g<1>127.0.0.1:{up_port}\2", cfg)
    # The checks send a few hundred requests in seconds: not what the demo's limits are for.
    cfg = re.sub(r"requests: \d+", "requests: 1000000", cfg)
    cfg = re.sub(r"burst: \d+", "burst: 1000000", cfg)
    (demo / "config.yaml").write_text(cfg)
    (run / "patients.json").write_text(json.dumps({"own": own, "foreign": foreign}))


class Gateway:
    def __init__(self, run):
        demo = run / "demo"
        self.info = json.loads((demo / "demo.json").read_text())
        cfg = (demo / "config.yaml").read_text()
        port = re.search(r"listeners:\n  - name: demo\n    address: 127\.0\.0\.1:(\d+)", cfg).group(1)
        self.base = f"https://localhost:{port}/fhir"
        self.tls = ssl.create_default_context(cafile=str(demo / "pki" / "ca.crt"))
        issuer = self.info["issuer"]
        self.key = serialization.load_pem_private_key(Path(issuer["signing_key_path"]).read_bytes(), None)
        self.tokens = {sub: self.mint(sub, roles, scope) for sub, (roles, scope) in PRINCIPALS.items()}

    def mint(self, sub, roles, scope):
        issuer = self.info["issuer"]
        now = int(time.time())
        head = {"alg": "ES256", "kid": issuer["kid"], "typ": "JWT"}
        claims = {"iss": issuer["iss"], "aud": "phigate-demo", "sub": sub, "tenant": "tenant-a", "roles": roles,
                  "scope": scope, "amr": ["pwd", "otp"], "acr": "mfa", "auth_time": now, "iat": now,
                  "exp": now + 3600, "sid": f"{sub}-interop"}
        b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
        signing_input = f"{b64(json.dumps(head).encode())}.{b64(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def send(self, who, path, method="GET", body=None, headers=None):
        h = dict(headers or {})
        if who:
            h["Authorization"] = f"Bearer {self.tokens[who]}"
        if body is not None and not isinstance(body, bytes):
            body, h["Content-Type"] = json.dumps(body).encode(), "application/fhir+json"
        req = urllib.request.Request(f"{self.base}/{path}", data=body, headers=h, method=method)
        try:
            with urllib.request.urlopen(req, context=self.tls, timeout=60) as resp:
                status, raw, hdrs = resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as e:
            status, raw, hdrs = e.code, e.read(), e.headers
        except (urllib.error.URLError, ConnectionError) as e:
            # No answer at all (a reset connection): status 0, for the check to report.
            print(f"  {method} {path.split('?')[0]}: {e}")
            return 0, None, {}
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = None
        return status, doc, hdrs


def code(doc):
    try:
        return doc["issue"][0]["details"]["coding"][0]["code"]
    except (KeyError, IndexError, TypeError):
        return ""


def entries(doc):
    return [e for e in (doc or {}).get("entry", []) if "resource" in e]


def names(doc, patient):
    return f"Patient/{patient}" in json.dumps(doc) or f'"id": "{patient}"' in json.dumps(doc)


class Checks:
    def __init__(self):
        self.failed, self.passed = [], 0

    def expect(self, name, ok, detail=""):
        if ok:
            self.passed += 1
        else:
            self.failed.append(f"{name}: {detail}")
            print(f"FAIL {name}: {detail}")


def check(run):
    gw = Gateway(run)
    pts = json.loads((run / "patients.json").read_text())
    own, foreign = pts["own"], pts["foreign"]
    c = Checks()
    clin, writer, svc = "interop_clinician", "interop_writer", "interop_service"

    # SMART discovery needs no token; nothing else is public.
    s, doc, _ = gw.send(None, "metadata")
    c.expect("anonymous metadata", s == 200, f"{s} {code(doc)}")
    s, doc, _ = gw.send(None, f"Patient/{own}")
    c.expect("anonymous read refused", s == 401, f"{s}")

    # Reads by id of every type the server holds: the care team's patient's records and records
    # naming no patient pass; the other patient's are refused after the response check.
    types = ["Patient", "Observation", "Condition", "Encounter", "Claim", "ExplanationOfBenefit",
             "DocumentReference", "Immunization", "Procedure", "MedicationRequest", "CarePlan", "CareTeam",
             "DiagnosticReport", "Provenance", "Organization", "Practitioner", "Location", "Device",
             "ImagingStudy", "AllergyIntolerance", "SupplyDelivery", "MedicationAdministration",
             "PractitionerRole", "Goal"]
    for t in types:
        s, bundle, _ = gw.send(svc, f"{t}?_count=40")
        c.expect(f"{t}: tenant-wide search", s == 200, f"{s} {code(bundle)}")
        if s != 200:
            continue
        for e in entries(bundle)[:40]:
            r = e["resource"]
            theirs = names(r, foreign)
            s, doc, _ = gw.send(clin, f"{t}/{r['id']}")
            want = 403 if theirs else 200
            c.expect(f"{t}/{r['id']} read", s == want, f"{s} {code(doc)}, wanted {want}")
        if t in ("Organization", "Practitioner", "Location", "PractitionerRole"):
            continue
        s, doc, _ = gw.send(clin, f"{t}?patient={own}&_count=50")
        c.expect(f"{t}?patient=own", s == 200 and not names(doc, foreign), f"{s} {code(doc)}")
        s, doc, _ = gw.send(clin, f"{t}?patient={foreign}")
        c.expect(f"{t}?patient=foreign", s == 403, f"{s}")
        s, doc, _ = gw.send(clin, f"{t}?_count=50")
        c.expect(f"{t}? narrowed", s == 200 and not names(doc, foreign), f"{s} {code(doc)}")

    # What SMART apps and FHIR clients ask for.
    for q in [f"Observation?patient={own}&_include=Observation:encounter&_count=20",
              f"Encounter?patient={own}&_include=Encounter:participant&_count=20",
              f"MedicationRequest?patient={own}&_include=MedicationRequest:medication&_count=20",
              f"Patient?_id={own}&_revinclude=Provenance:target",
              f"Observation?patient={own}&_sort=-date&_count=5",
              f"Observation?patient={own}&_elements=id,code&_count=5"]:
        s, doc, _ = gw.send(clin, q)
        c.expect(q.split("?")[0] + " " + q.split("&", 1)[-1], s == 200 and not names(doc, foreign), f"{s} {code(doc)}")
    s, doc, _ = gw.send(clin, f"Observation?patient={own}&_summary=count")
    c.expect("_summary=count", s == 200 and not entries(doc), f"{s} {len(entries(doc))} entries")
    s, doc, _ = gw.send(clin, f"Practitioner?_revinclude=Encounter:practitioner")
    c.expect("revinclude across the compartment refused", s == 403, f"{s}")

    # A whole Synthea bundle is far over the inspection cap: a readable 413 over HTTP/1.1.
    bundle = gzip.decompress((HERE / "data" / OWN_FILE).read_bytes())
    s, doc, _ = gw.send(svc, "", method="POST", body=bundle, headers={"Content-Type": "application/fhir+json"})
    c.expect("large transaction", s == 413 and code(doc) == "body_too_large", f"{s} {code(doc)}")

    # Writes by a care-team clinician: her patient's records, never the other patient's.
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "heart rate"},
           "subject": {"reference": f"Patient/{own}"}}
    s, doc, _ = gw.send(writer, "Observation", method="POST", body=obs)
    c.expect("create for own patient", s == 201, f"{s} {code(doc)}")
    oid = (doc or {}).get("id")
    s, doc, _ = gw.send(writer, f"Observation/{oid}", method="PUT", body=dict(obs, id=oid, status="amended"))
    c.expect("update own record", s == 200, f"{s} {code(doc)}")
    moved = dict(obs, id=oid, subject={"reference": f"Patient/{foreign}"})
    s, doc, _ = gw.send(writer, f"Observation/{oid}", method="PUT", body=moved)
    c.expect("move own record to the other patient", s == 403, f"{s}")
    patch = {"Content-Type": "application/json-patch+json"}
    status = json.dumps([{"op": "replace", "path": "/status", "value": "final"}]).encode()
    s, doc, _ = gw.send(writer, f"Observation/{oid}", method="PATCH", body=status, headers=patch)
    c.expect("JSON Patch of own record", s == 200, f"{s} {code(doc)}")
    away = json.dumps([{"op": "replace", "path": "/subject", "value": {"reference": f"Patient/{foreign}"}}]).encode()
    s, doc, _ = gw.send(writer, f"Observation/{oid}", method="PATCH", body=away, headers=patch)
    c.expect("JSON Patch moving own record to the other patient", s == 403, f"{s}")
    s, theirs, _ = gw.send(svc, f"Observation?patient={foreign}&_count=1")
    r = entries(theirs)[0]["resource"]
    s, doc, _ = gw.send(writer, f"Observation/{r['id']}", method="PUT", body=dict(r, subject={"reference": f"Patient/{own}"}))
    c.expect("take over the other patient's record", s == 403, f"{s}")
    s, doc, _ = gw.send(writer, f"Observation/{r['id']}", method="DELETE")
    c.expect("delete the other patient's record", s == 403, f"{s}")
    s, doc, _ = gw.send(writer, f"Observation/{oid}", method="DELETE")
    c.expect("delete own record", s == 200, f"{s} {code(doc)}")

    # A backend service registers a patient, alone and in a transaction with her records.
    s, doc, _ = gw.send(svc, "Patient", method="POST", body={"resourceType": "Patient", "name": [{"family": "Interop"}]})
    c.expect("register a patient", s == 201, f"{s} {code(doc)}")
    tx = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0c3a5c1e-2d61-4d3b-9a55-2b1f00000001",
         "resource": {"resourceType": "Patient", "name": [{"family": "Interop"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": dict(obs, subject={"reference": "urn:uuid:0c3a5c1e-2d61-4d3b-9a55-2b1f00000001"}),
         "request": {"method": "POST", "url": "Observation"}}]}
    s, doc, _ = gw.send(svc, "", method="POST", body=tx)
    c.expect("register a patient with her records", s == 200, f"{s} {code(doc)}")

    print(f"{c.passed} checks passed, {len(c.failed)} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    if sys.argv[1] == "prepare":
        prepare(Path(sys.argv[2]), sys.argv[3], *sys.argv[4:7])
    else:
        sys.exit(check(Path(sys.argv[2])))
