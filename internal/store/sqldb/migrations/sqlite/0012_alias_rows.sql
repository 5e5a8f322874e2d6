-- Alias parameters keep no index rows of their own (index.AliasOf): their
-- entries are exactly those of other parameters of the same type -
-- Observation's combo-code is code and component-code, combo-value-quantity
-- is value-quantity and component-value-quantity, the patient parameters
-- written "X.subject.where(resolve() is Patient)" are the subject rows
-- whose target type is Patient - and search reads those instead. Writes no
-- longer add them; this deletes the ones existing databases hold (about a
-- tenth of a Synthea import's index rows). The pairs are the aliases the
-- derivation finds for the R4 definitions; index.TestAliasMigration keeps
-- this list and it equal (a later change needs a migration of its own).
CREATE TABLE alias_param_0012 (type TEXT NOT NULL, param TEXT NOT NULL);
INSERT INTO alias_param_0012 (type, param) VALUES
  ('Account', 'patient'),
  ('Appointment', 'location'),
  ('Appointment', 'patient'),
  ('Appointment', 'practitioner'),
  ('AppointmentResponse', 'location'),
  ('AppointmentResponse', 'patient'),
  ('AppointmentResponse', 'practitioner'),
  ('AuditEvent', 'patient'),
  ('Basic', 'patient'),
  ('Bundle', 'message'),
  ('CapabilityStatement', 'version'),
  ('CarePlan', 'patient'),
  ('CareTeam', 'patient'),
  ('ChargeItem', 'patient'),
  ('ClinicalImpression', 'patient'),
  ('CodeSystem', 'url'),
  ('Communication', 'patient'),
  ('CommunicationRequest', 'patient'),
  ('Composition', 'patient'),
  ('Condition', 'patient'),
  ('Contract', 'patient'),
  ('Coverage', 'patient'),
  ('DeviceRequest', 'patient'),
  ('DeviceUseStatement', 'subject'),
  ('DiagnosticReport', 'patient'),
  ('DocumentManifest', 'patient'),
  ('DocumentReference', 'patient'),
  ('Encounter', 'patient'),
  ('Encounter', 'practitioner'),
  ('EnrollmentRequest', 'subject'),
  ('Flag', 'patient'),
  ('Goal', 'patient'),
  ('GuidanceResponse', 'patient'),
  ('ImagingStudy', 'patient'),
  ('Invoice', 'patient'),
  ('Linkage', 'source'),
  ('List', 'patient'),
  ('MeasureReport', 'patient'),
  ('Media', 'patient'),
  ('MedicationAdministration', 'patient'),
  ('MedicationDispense', 'patient'),
  ('MedicationRequest', 'patient'),
  ('MedicationStatement', 'patient'),
  ('Observation', 'combo-code'),
  ('Observation', 'combo-code-value-concept'),
  ('Observation', 'combo-code-value-quantity'),
  ('Observation', 'combo-data-absent-reason'),
  ('Observation', 'combo-value-concept'),
  ('Observation', 'combo-value-quantity'),
  ('Observation', 'patient'),
  ('Patient', 'phonetic'),
  ('Person', 'patient'),
  ('Person', 'phonetic'),
  ('Person', 'practitioner'),
  ('Person', 'relatedperson'),
  ('Practitioner', 'phonetic'),
  ('Procedure', 'patient'),
  ('QuestionnaireResponse', 'patient'),
  ('RelatedPerson', 'phonetic'),
  ('RequestGroup', 'patient'),
  ('ResearchSubject', 'patient'),
  ('RiskAssessment', 'patient'),
  ('ServiceRequest', 'patient'),
  ('Specimen', 'patient'),
  ('Task', 'patient');
CREATE TABLE alias_pid_0012 (pid INTEGER PRIMARY KEY);
INSERT INTO alias_pid_0012 (pid)
  SELECT p.id FROM search_param p JOIN alias_param_0012 a ON a.type = p.type AND a.param = p.param;
DELETE FROM idx_token WHERE pid IN (SELECT pid FROM alias_pid_0012);
DELETE FROM idx_string WHERE pid IN (SELECT pid FROM alias_pid_0012);
DELETE FROM idx_date WHERE pid IN (SELECT pid FROM alias_pid_0012);
DELETE FROM idx_ref WHERE pid IN (SELECT pid FROM alias_pid_0012);
DELETE FROM idx_quantity WHERE pid IN (SELECT pid FROM alias_pid_0012);
DELETE FROM idx_number WHERE pid IN (SELECT pid FROM alias_pid_0012);
DELETE FROM idx_uri WHERE pid IN (SELECT pid FROM alias_pid_0012);
DELETE FROM idx_composite WHERE pid IN (SELECT pid FROM alias_pid_0012);
DROP TABLE alias_pid_0012;
DROP TABLE alias_param_0012;
