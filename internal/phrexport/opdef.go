package phrexport

// operationDefinition is served at [base]/OperationDefinition/phr-export.
const operationDefinition = `{"resourceType":"OperationDefinition","id":"phr-export",` +
	`"url":"http://hl7.org/fhir/uv/phr/OperationDefinition/phr-export","version":"1.0.0",` +
	`"name":"PhrExport","title":"Export a personal health record","status":"active","kind":"operation",` +
	`"description":"Exports a patient's record in the formats of the HL7 Personal Health Record format IG: a document Bundle (PhrBundle: Composition cover page, LOINC 11503-0, first, then the Patient, then the rest), NDJSON, a .phr file (NDJSON as an attachment) or an encrypted .sphr (WinZip AES-256 zip with the .phr and the attachment files). NDJSON and .phr stream with chunked transfer and the header X-PHR-Version: 1.0; an error after streaming started is written inline as an OperationOutcome. The .sphr passphrase comes from the X-PHR-Passphrase request header or the passphrase parameter of a POST; without one the server generates one and returns it once in the X-PHR-Passphrase response header. sign=true adds a detached JWS (RFC 7515 appendix F, EdDSA with the server's key) over the SHA-256 of the body in the X-PHR-Signature HTTP trailer. A patient-confined access token can export only its own patient.",` +
	`"code":"phr-export","resource":["Bundle","Patient"],"system":true,"type":true,"instance":true,"affectsState":false,` +
	`"parameter":[` +
	`{"name":"outputFormat","use":"in","min":0,"max":"1","type":"string","documentation":"bundle (default), ndjson, phr or sphr; MIME types application/fhir+json, application/fhir+ndjson, application/x-ndjson and application/zip are accepted too"},` +
	`{"name":"start","use":"in","min":0,"max":"1","type":"date","documentation":"Start of the clinical date range (partial dates allowed: 2010, 2020-06). Resources with a clinical date (Observation.effective, Condition.onset/recordedDate, Encounter.period, Procedure.performed, Immunization.occurrence, MedicationRequest.authoredOn, DiagnosticReport.effective, DocumentReference.date...) are kept when that date overlaps the range; the Patient, undated resources and the shared resources referenced (Practitioner, Organization, Location, Medication) are always included."},` +
	`{"name":"end","use":"in","min":0,"max":"1","type":"date","documentation":"End of the clinical date range (inclusive, partial dates allowed)."},` +
	`{"name":"patient","use":"in","min":0,"max":"1","type":"string","documentation":"Patient/[id]: the patient to export on a multi-user system. Without it an unconfined caller exports every patient, a patient-confined one itself."},` +
	`{"name":"_type","use":"in","min":0,"max":"*","type":"string","documentation":"Comma-separated resource types to export (the Patient and the cover page are always written). AuditEvents are exported only when listed."},` +
	`{"name":"_since","use":"in","min":0,"max":"1","type":"instant","documentation":"Only resources last updated at or after this instant."},` +
	`{"name":"_until","use":"in","min":0,"max":"1","type":"instant","documentation":"Only resources last updated at or before this instant."},` +
	`{"name":"passphrase","use":"in","min":0,"max":"1","type":"string","documentation":"POST only (never in the URL): the .sphr passphrase."},` +
	`{"name":"sign","use":"in","min":0,"max":"1","type":"boolean","documentation":"true: send a detached JWS of the output in the X-PHR-Signature trailer (verify with phr verify FILE --sig SIGFILE)."},` +
	`{"name":"return","use":"out","min":1,"max":"1","type":"Binary","documentation":"The export in the requested format."}]}`
