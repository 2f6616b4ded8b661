//! gRPC health and reflection as both peers serve them: health says SERVING for every service
//! a port serves (health and reflection included), and reflection, in both its versions (v1,
//! and v1alpha, which Python's reflection client and several tools still speak), lists exactly
//! those services and describes only that port's contract.

use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_reflection::server::{v1, v1alpha};

/// The health service's name.
pub const HEALTH: &str = "grpc.health.v1.Health";
/// Reflection, the version tools speak today.
pub const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
/// Reflection, the version older clients (Python's `grpcio-reflection`, some CLIs) speak.
pub const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

/// The health and reflection services of a port that serves `services` (their full names),
/// described by `descriptors` (an encoded `FileDescriptorSet` of that port's contract only).
pub struct Conventions<H, R1, R2> {
    /// `grpc.health.v1.Health`, every served service SERVING.
    pub health: HealthServer<H>,
    /// `grpc.reflection.v1.ServerReflection`.
    pub reflection_v1: v1::ServerReflectionServer<R1>,
    /// `grpc.reflection.v1alpha.ServerReflection`.
    pub reflection_v1alpha: v1alpha::ServerReflectionServer<R2>,
}

/// Health and reflection for a port serving `services` besides health and reflection, whose
/// contract is `descriptors`.
pub async fn conventions(
    descriptors: &'static [u8],
    services: &[&str],
) -> Result<
    Conventions<impl Health, impl v1::ServerReflection, impl v1alpha::ServerReflection>,
    tonic_reflection::server::Error,
> {
    let all: Vec<&str> = services
        .iter()
        .copied()
        .chain([HEALTH, REFLECTION_V1, REFLECTION_V1ALPHA])
        .collect();
    let (reporter, health) = tonic_health::server::health_reporter();
    for service in &all {
        reporter
            .set_service_status(*service, tonic_health::ServingStatus::Serving)
            .await;
    }
    let builder = || {
        all.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(descriptors)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(
                    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
                ),
            |b, s| b.with_service_name(*s),
        )
    };
    Ok(Conventions {
        health,
        reflection_v1: builder().build_v1()?,
        reflection_v1alpha: builder().build_v1alpha()?,
    })
}
