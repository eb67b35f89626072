//! moto server (the AWS API emulator from PyPI, installed by `localstack/install-moto.sh`)
//! on a free loopback port for one test, and the seed every AWS test starts from.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A moto server on a free loopback port behind the strict proxy (calls AWS would reject
/// are rejected, see `strict_aws.rs`), stopped on drop. A test during which any call was
/// rejected so fails on drop, even if it handled the error.
pub struct Moto {
    child: Child,
    /// The strict proxy: what tests give the SDK.
    pub endpoint: String,
    /// moto itself, for what the strict proxy must not judge (a benchmark's timing).
    pub raw_endpoint: String,
    strict: super::strict_aws::StrictAws,
}

impl Moto {
    /// Calls AWS would have rejected so far.
    pub fn violations(&self) -> Vec<String> {
        self.strict
            .violations
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// The test seam for target health: DescribeTargetHealth reports `id`:`port` as `state`.
    pub fn set_target_health(&self, id: &str, port: u16, state: &str) {
        self.strict.set_target_health(id, port, state);
    }

    /// Forgets recorded violations (a test that makes one on purpose, and checks it).
    pub fn clear_violations(&self) {
        if let Ok(mut v) = self.strict.violations.lock() {
            v.clear();
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let v = self.violations();
        if !v.is_empty() && !std::thread::panicking() {
            panic!("calls AWS would have rejected (the emulator is kinder): {v:#?}");
        }
    }
}

pub fn start_moto() -> Moto {
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/localstack/install-moto.sh"
        ))
        .output()
        .expect("run install-moto.sh");
    assert!(
        out.status.success(),
        "installing moto failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let venv = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new(format!("{venv}/bin/moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("MOTO_ACM_VALIDATION_WAIT", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto_server");
    let raw_endpoint = format!("http://127.0.0.1:{port}");
    let strict = super::strict_aws::start_strict(&raw_endpoint);
    let moto = Moto {
        child,
        endpoint: strict.endpoint.clone(),
        raw_endpoint,
        strict,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    moto
}

pub fn test_credentials() {
    // Same values in every test: setting them concurrently is harmless.
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    std::env::set_var("AWS_REGION", "us-east-1");
}

/// A VPC with two tagged subnets in two AZs (named `<cluster>-<az>`) and `nodes` instances;
/// returns the instances' provider IDs.
pub async fn seed_cluster(endpoint: &str, cluster: &str, nodes: usize) -> Vec<String> {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .load()
        .await;
    let ec2 = aws_sdk_ec2::Client::new(&conf);
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .expect("vpc");
    let vpc_id = vpc
        .vpc()
        .and_then(|v| v.vpc_id())
        .expect("vpc id")
        .to_string();
    let mut subnets = Vec::new();
    for (i, az) in ["us-east-1a", "us-east-1b"].iter().enumerate() {
        let s = ec2
            .create_subnet()
            .vpc_id(&vpc_id)
            .cidr_block(format!("10.0.{i}.0/24"))
            .availability_zone(*az)
            .send()
            .await
            .expect("subnet");
        let id = s
            .subnet()
            .and_then(|s| s.subnet_id())
            .expect("subnet id")
            .to_string();
        let tag = |k: &str, v: &str| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build();
        ec2.create_tags()
            .resources(&id)
            .tags(tag(&format!("kubernetes.io/cluster/{cluster}"), "shared"))
            .tags(tag("kubernetes.io/role/elb", "1"))
            .tags(tag("kubernetes.io/role/internal-elb", "1"))
            .tags(tag("Name", &format!("{cluster}-{az}")))
            .send()
            .await
            .expect("tags");
        subnets.push((id, az.to_string()));
    }
    let image = any_image(&ec2).await;
    let mut provider_ids = Vec::new();
    for n in 0..nodes {
        let (subnet, az) = &subnets[n % subnets.len()];
        let r = ec2
            .run_instances()
            .image_id(&image)
            .min_count(1)
            .max_count(1)
            .subnet_id(subnet)
            .send()
            .await
            .expect("instance");
        let id = r
            .instances()
            .first()
            .and_then(|i| i.instance_id())
            .expect("instance id")
            .to_string();
        provider_ids.push(format!("aws:///{az}/{id}"));
    }
    provider_ids
}

/// An image instances can be run from (moto lists some; any ID does otherwise).
pub async fn any_image(ec2: &aws_sdk_ec2::Client) -> String {
    ec2.describe_images()
        .send()
        .await
        .ok()
        .and_then(|r| {
            r.images()
                .first()
                .and_then(|i| i.image_id())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "ami-12345678".into())
}

/// [`seed_cluster`] for the cluster name the AWS tests use.
pub async fn seed(endpoint: &str, nodes: usize) -> Vec<String> {
    seed_cluster(endpoint, "emu", nodes).await
}
