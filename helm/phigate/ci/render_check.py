# Lints and renders the chart with the Helm SDK (pip: helm-python-sdk), writes the objects to
# /tmp/rendered.yaml and the embedded gateway config to /tmp/chart-phigate.yaml. See ../README.md.
import helm_python, yaml, sys, subprocess
print("lint:", helm_python.lint("./phigate"))
with helm_python.Chart.load("./phigate") as c:
    out = c.render({}, name="demo", namespace="prod")
docs=[]
for path, text in sorted(out.items()):
    if path.endswith("NOTES.txt"): continue
    for d in yaml.safe_load_all(text):
        if d: docs.append(d)
open("/tmp/rendered.yaml","w").write(yaml.safe_dump_all(docs))
print(len(docs), "objects:", [d["kind"] for d in docs])
cm=[d for d in docs if d["kind"]=="ConfigMap"][0]
open("/tmp/chart-phigate.yaml","w").write(cm["data"]["phigate.yaml"])
