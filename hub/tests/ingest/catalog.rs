//! What the hub keeps besides samples: labs and their teams, the instruments tests ran on, and
//! the JSON Schemas a lab registers for its secondary and tertiary metadata.

use super::auth::{bearer, token_hub, upload_as};
use super::*;
use cyclerd_proto::hub::query_client::QueryClient;
use cyclerd_proto::hub::{GetMetadataSchemasRequest, GetTestRequest, ListTestsRequest};
use cyclerhub::auth::Role;
use tonic::Code;

const SECONDARY: &str = r#"{
    "type": "object",
    "required": ["manufacturer"],
    "properties": {
        "manufacturer": {"type": "string", "minLength": 1},
        "mass_g": {"type": "number", "exclusiveMinimum": 0}
    }
}"#;

/// A hub requiring tokens, an upload stream of `daemon_id` with a token of `lab`, and the
/// token (which also reads the lab's tests).
async fn lab_hub(backend: Backend, lab: &str, daemon_id: &str) -> (Hub, Upload, String) {
    let hub = token_hub(backend).await;
    let token = hub.store.issue_token(lab, daemon_id, Role::Daemon).unwrap();
    let up = upload_as(&hub, &token, daemon_id).await;
    (hub, up, token)
}

/// `registered(id, test_id)` with `extra` metadata.
fn registered_with(id: u64, test_id: &str, extra: &[(&str, &str)]) -> Entry {
    let mut e = registered(id, test_id);
    if let Some(Body::TestRegistered(t)) = &mut e.body {
        for (k, v) in extra {
            t.metadata.insert(k.to_string(), v.to_string());
        }
    }
    e
}

async fn a_lab_registers_metadata_schemas_and_an_unusable_one_changes_nothing(backend: Backend) {
    let mut hub = Hub::start(backend).await;
    hub.store
        .set_metadata_schema("cell-ageing", "secondary", SECONDARY)
        .unwrap();
    for (tier, document, why) in [
        ("secondary", "{\"type\": ", "not JSON"),
        (
            "secondary",
            r#"{"type": "banana"}"#,
            "not a valid JSON Schema",
        ),
        ("primary", "{}", "not a metadata tier"),
    ] {
        let e = hub
            .store
            .set_metadata_schema("cell-ageing", tier, document)
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{e}");
    }
    let schemas = hub.store.metadata_schemas("cell-ageing").unwrap();
    assert_eq!(schemas.len(), 1);
    assert_eq!(
        (schemas[0].tier.as_str(), schemas[0].schema_json.as_str()),
        ("secondary", SECONDARY)
    );
    assert!(
        hub.store
            .labs()
            .unwrap()
            .iter()
            .any(|(l, _)| l == "cell-ageing")
    );

    let mut q = QueryClient::new(hub.channel().await);
    let served = q
        .get_metadata_schemas(GetMetadataSchemasRequest {
            lab: "cell-ageing".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(served.schemas.len(), 1);
    assert_eq!(served.schemas[0].schema_json, SECONDARY);

    hub.store
        .remove_metadata_schema("cell-ageing", "secondary")
        .unwrap();
    assert!(
        hub.store
            .metadata_schemas("cell-ageing")
            .unwrap()
            .is_empty()
    );
    let again = hub
        .store
        .remove_metadata_schema("cell-ageing", "secondary")
        .unwrap_err();
    assert!(again.to_string().contains("has no secondary"), "{again}");
    hub.shutdown().await;
}

async fn a_test_whose_metadata_breaks_its_labs_schema_is_kept_with_the_problems_recorded(
    backend: Backend,
) {
    let (mut hub, mut up, token) = lab_hub(backend, "cell-ageing", "daemon-a").await;
    hub.store
        .set_metadata_schema("cell-ageing", "secondary", SECONDARY)
        .unwrap();
    up.send_entries([
        registered_with(1, T1, &[("secondary.mass_g", "-3")]),
        samples(2, T1, 0, 50),
        registered_with(
            3,
            T2,
            &[
                ("secondary.manufacturer", "LG"),
                ("secondary.mass_g", "68.5"),
            ],
        ),
    ])
    .await;
    assert!(up.until_ack(3).await.is_empty(), "nothing is rejected");
    assert_eq!(hub.store.sample_count(T1).unwrap(), 50, "the data is kept");

    let mut q = QueryClient::new(hub.channel().await);
    let broken = q
        .get_test(bearer(GetTestRequest { test_id: T1.into() }, Some(&token)))
        .await
        .unwrap()
        .into_inner();
    let problems = broken.metadata_problems.join("\n");
    assert!(problems.contains("manufacturer"), "{problems}");
    assert!(problems.contains("secondary.mass_g"), "{problems}");
    let fine = q
        .get_test(bearer(GetTestRequest { test_id: T2.into() }, Some(&token)))
        .await
        .unwrap()
        .into_inner();
    assert!(
        fine.metadata_problems.is_empty(),
        "{:?}",
        fine.metadata_problems
    );
    hub.shutdown().await;
}

async fn tests_carry_their_team_and_instruments_into_the_labs_catalogue(backend: Backend) {
    let (mut hub, mut up, token) = lab_hub(backend, "cell-ageing", "daemon-a").await;
    up.send_entries([
        registered_with(1, T1, &[("team", "calendar-ageing")]),
        registered(2, T2),
    ])
    .await;
    up.until_ack(2).await;

    let teams = hub.store.teams().unwrap();
    assert_eq!(teams.len(), 1);
    assert_eq!(
        (teams[0].lab.as_str(), teams[0].team.as_str()),
        ("cell-ageing", "calendar-ageing")
    );
    let mut q = QueryClient::new(hub.channel().await);
    let of_team = q
        .list_tests(bearer(
            ListTestsRequest {
                team: "calendar-ageing".into(),
                ..Default::default()
            },
            Some(&token),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(of_team.tests.len(), 1);
    assert_eq!(of_team.tests[0].test_id, T1);
    assert_eq!(of_team.tests[0].team, "calendar-ageing");

    let detail = q
        .get_test(bearer(GetTestRequest { test_id: T1.into() }, Some(&token)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(detail.equipment.len(), 1);
    let psb = &detail.equipment[0];
    assert_eq!(
        (psb.name.as_str(), psb.family.as_str(), psb.role.as_str()),
        ("psb1", "ea-psb", "source")
    );
    hub.shutdown().await;
}

async fn a_token_reads_only_its_own_labs_metadata_schemas(backend: Backend) {
    let mut hub = token_hub(backend).await;
    hub.store
        .set_metadata_schema("cell-ageing", "secondary", SECONDARY)
        .unwrap();
    let token = hub
        .store
        .issue_token("cell-ageing", "pc-1", Role::Daemon)
        .unwrap();
    let mut q = QueryClient::new(hub.channel().await);
    let ask = |lab: &str, token: Option<&str>| {
        bearer(GetMetadataSchemasRequest { lab: lab.into() }, token)
    };
    let ours = q
        .get_metadata_schemas(ask("", Some(&token)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ours.lab, "cell-ageing");
    assert_eq!(ours.schemas.len(), 1);
    let theirs = q
        .get_metadata_schemas(ask("formation", Some(&token)))
        .await
        .unwrap_err();
    assert_eq!(theirs.code(), Code::PermissionDenied, "{theirs:?}");
    let anonymous = q
        .get_metadata_schemas(ask("cell-ageing", None))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous:?}");
    hub.shutdown().await;
}

on_both_backends!(
    a_token_reads_only_its_own_labs_metadata_schemas,
    a_lab_registers_metadata_schemas_and_an_unusable_one_changes_nothing,
    a_test_whose_metadata_breaks_its_labs_schema_is_kept_with_the_problems_recorded,
    tests_carry_their_team_and_instruments_into_the_labs_catalogue,
);
