package phigate.patients_test

import data.phigate.authz
import data.phigate.fixtures as f

test_non_care_team_patient_denied if {
	d := authz.decision with input as f.get(f.clinician_a, f.read_patient("a-p3"))
	not d.allow
	d.reasons == ["patient_not_permitted"]
}

test_search_for_foreign_patient_denied if {
	d := authz.decision with input as f.get(f.clinician_a, f.search("Observation", ["a-p4"]))
	not d.allow
	"patient_not_permitted" in d.reasons
}

test_search_without_patient_narrowed if {
	d := authz.decision with input as f.get(f.clinician_a, f.search("Observation", []))
	d.allow
	d.obligations.narrow_patients == ["a-p1", "a-p2"]
}

test_search_without_patient_refused_when_tenant_says_so if {
	d := authz.decision with input as f.get(f.clinician_a, f.search("Observation", []))
		with data.tenants["tenant-a"].restricted_search as "refuse"
	not d.allow
	"patient_param_required" in d.reasons
}

test_non_compartment_search_not_narrowed if {
	d := authz.decision with input as f.get(f.clinician_a, f.search("Practitioner", []))
	d.allow
	d.obligations.narrow_patients == null
}

# A Device names the patient it is affixed to (Device.patient) outside the R4 compartment.
test_search_of_a_patient_linked_type_narrowed if {
	d := authz.decision with input as f.get(f.clinician_a, f.search("Device", []))
	d.allow
	d.obligations.narrow_patients == ["a-p1", "a-p2"]
}

test_patient_linked_type_is_patient_data if {
	d := authz.decision with input as f.get(f.er_doctor_a, f.search("Device", []))
	not d.allow
	"patient_not_permitted" in d.reasons
}

test_conditional_write_of_a_patient_linked_type_denied_for_care_team if {
	d := authz.decision with input as f.req(f.writer_a, "DELETE", f.op("delete", "Device", []))
	not d.allow
	"conditional_write" in d.reasons
}

test_unresolved_param_denied_for_care_team if {
	fhir := object.union(f.search("Observation", []), {"unresolved": ["subject:Patient.name"]})
	d := authz.decision with input as f.get(f.clinician_a, fhir)
	not d.allow
	"unresolved_params" in d.reasons
}

test_unresolved_param_allowed_for_tenant_wide_role if {
	fhir := object.union(f.search("Observation", []), {"unresolved": ["_has"]})
	d := authz.decision with input as f.get(f.scraper_a, fhir)
	d.allow
	d.obligations.narrow_patients == null
	d.obligations.permitted_tenant == "tenant-a"
}

test_tenant_wide_search_not_narrowed_but_checked_by_tenant if {
	d := authz.decision with input as f.get(f.bulk_client, f.search("Observation", []))
	d.allow
	d.obligations.narrow_patients == null
	d.obligations.permitted_tenant == "tenant-a"
}

test_break_glass_search_not_narrowed if {
	i := f.with_request(f.get(f.er_doctor_a, f.search("Observation", [])), {"break_glass_reason": "mass casualty"})
	d := authz.decision with input as i
	d.allow
	d.obligations.narrow_patients == null
	d.obligations.permitted_tenant == "tenant-a"
}

test_batch_with_one_foreign_entry_denied if {
	batch := object.union(f.op("batch", null, ["a-p1", "a-p3"]), {"entries": [f.read_patient("a-p1"), f.read_patient("a-p3")]})
	d := authz.decision with input as f.req(f.clinician_a, "POST", batch)
	not d.allow
	"patient_not_permitted" in d.reasons
}

test_batch_of_own_patients_allowed if {
	batch := object.union(f.op("batch", null, ["a-p1", "a-p2"]), {"entries": [f.read_patient("a-p1"), f.read_patient("a-p2")]})
	d := authz.decision with input as f.req(f.clinician_a, "POST", batch)
	d.allow
}

test_everything_on_foreign_patient_denied if {
	fhir := object.union(f.op("operation", "Patient", ["a-p3"]), {"id": "a-p3", "operation": "everything"})
	d := authz.decision with input as f.get(f.clinician_a, fhir)
	not d.allow
}

test_everything_on_own_patient_allowed if {
	fhir := object.union(f.op("operation", "Patient", ["a-p1"]), {"id": "a-p1", "operation": "everything"})
	d := authz.decision with input as f.get(f.clinician_a, fhir)
	d.allow
}

test_patient_app_reaches_only_its_patient if {
	d := authz.decision with input as f.get(f.patient_app, f.read_patient("a-p3"))
	d.allow
	d.obligations.permitted_patients == ["a-p3"]
	e := authz.decision with input as f.get(f.patient_app, f.read_patient("a-p1"))
	not e.allow
}

test_fhir_user_patient_is_patient_context if {
	p := {"sub": "u", "tenant": "tenant-a", "roles": ["clinician"], "fhir_user": "Patient/a-p5", "scopes": ["user/*.rs"]}
	authz.mode == "patient_context" with input as f.get(p, f.read_patient("a-p5"))
	d := authz.decision with input as f.get(p, f.read_patient("a-p1"))
	not d.allow
}

test_admin_has_no_patient_data if {
	d := authz.decision with input as f.get(f.admin_a, f.search("Observation", []))
	not d.allow
	e := authz.decision with input as f.get(f.admin_a, f.search("Organization", []))
	e.allow
	e.obligations.permitted_patients == []
}

test_empty_care_team_denied_patient_data if {
	d := authz.decision with input as f.get(f.er_doctor_a, f.search("Observation", []))
	not d.allow
	"patient_not_permitted" in d.reasons
}

test_system_search_refused_for_care_team if {
	d := authz.decision with input as f.get(f.clinician_a, f.op("search-system", null, []))
	not d.allow
	"patient_param_required" in d.reasons
}

test_a_further_page_of_a_stored_search_allowed_and_verified_for_care_team if {
	page := object.union(f.op("search-system", null, []), {"continuation": true})
	d := authz.decision with input as f.get(f.clinician_a, page)
	d.allow
	d.obligations.permitted_patients == ["a-p1", "a-p2"]
}

# Which types a stored search holds only the server knows: a principal whose scopes name some
# types only cannot page one.
test_a_further_page_needs_a_scope_for_every_type if {
	page := object.union(f.op("search-system", null, []), {"continuation": true})
	observations_only := object.union(f.clinician_a, {"scopes": ["user/Observation.rs"]})
	d := authz.decision with input as f.get(observations_only, page)
	not d.allow
}

test_conditional_delete_denied_for_care_team if {
	d := authz.decision with input as f.req(f.writer_a, "DELETE", f.op("delete", "Observation", []))
	not d.allow
	d.reasons == ["conditional_write", "patient_not_permitted"]
}

test_conditional_update_naming_a_care_team_patient_still_denied if {
	d := authz.decision with input as f.req(f.writer_a, "PUT", f.op("update", "Observation", ["a-p1"]))
	not d.allow
	"conditional_write" in d.reasons
}

test_update_by_id_for_care_team_patient_allowed if {
	update := object.union(f.op("update", "Observation", ["a-p1"]), {"id": "o1"})
	d := authz.decision with input as f.req(f.writer_a, "PUT", update)
	d.allow
}

test_tenant_wide_role_checked_by_tenant_not_by_list if {
	d := authz.decision with input as f.get(f.scraper_a, f.read_patient("a-p4"))
	d.allow
	d.obligations.permitted_patients == null
	d.obligations.permitted_tenant == "tenant-a"
}

test_tenant_wide_role_denied_unknown_patient if {
	d := authz.decision with input as f.get(f.scraper_a, f.read_patient("a-p404"))
	not d.allow
	d.reasons == ["patient_not_permitted"]
}

test_tenant_wide_role_denied_other_tenants_patient if {
	d := authz.decision with input as f.get(f.scraper_a, f.read_patient("b-p1"))
	not d.allow
	"patient_not_permitted" in d.reasons
}

test_care_team_gets_no_permitted_tenant if {
	d := authz.decision with input as f.get(f.clinician_a, f.read_patient("a-p1"))
	d.obligations.permitted_tenant == null
}

# The decision of a tenant-scoped principal does not depend on how many patients the tenant has.
test_tenant_wide_decision_does_not_list_the_tenant if {
	many := {sprintf("a-x%d", [i]): {"tenant": "tenant-a"} | some i in numbers.range(1, 300)}
	d := authz.decision with input as f.get(f.bulk_client, f.read_patient("a-x7"))
		with data.patients as many
	d.allow
	d.obligations.permitted_tenant == "tenant-a"
	d.obligations.permitted_patients == null
}
