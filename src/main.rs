//! The `tollgate` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use tollgate::model_builder::CONTROLLER_NAME;
use tollgate::sources::manifest_dir::load_dir;
use tollgate::{build, BuildOptions, Grouping};
use tollgate_contract::{DesiredState, Diagnostic, Severity, TargetType};

/// Tollgate: a Kubernetes ingress controller. It turns networking.k8s.io/v1 Ingress objects
/// into AWS Application Load Balancers, or serves them itself as a reverse proxy.
#[derive(Parser)]
#[command(version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the desired load-balancer model built from a directory of manifests, with every
    /// diagnostic, and touch nothing.
    ///
    /// Exit status: 0 when every object was built (warnings allowed), 2 when any object or
    /// part of one was rejected (an Error diagnostic, including unparsable files), 1 when the
    /// command itself failed (e.g. the directory cannot be read).
    Plan(PlanArgs),
}

/// Options shared by every command that builds the model.
#[derive(Args, Clone)]
struct ModelArgs {
    /// Directory of Kubernetes manifests (YAML, multi-document, or JSON; `kind: List`
    /// included), read recursively. Hidden files are skipped.
    #[arg(long, value_name = "DIR")]
    manifests: PathBuf,

    /// Claim Ingresses of this class name (spec.ingressClassName or the legacy
    /// kubernetes.io/ingress.class annotation) even when no IngressClass object names
    /// Tollgate's controller. IngressClasses with spec.controller
    /// `tollgate.io/ingress-controller` are always claimed.
    #[arg(long, value_name = "NAME", default_value = "tollgate")]
    ingress_class: String,

    /// Also claim Ingresses that name no class when no default IngressClass is Tollgate's.
    #[arg(long)]
    watch_ingress_without_class: bool,

    /// Target type for backends without an alb.ingress.kubernetes.io/target-type annotation.
    #[arg(long, value_enum, default_value_t = TargetTypeArg::Ip)]
    default_target_type: TargetTypeArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum TargetTypeArg {
    Ip,
    Instance,
}

#[derive(Args)]
struct PlanArgs {
    #[command(flatten)]
    model: ModelArgs,

    /// Output format.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Yaml)]
    output: OutputFormat,

    /// Gather every Ingress into one load balancer, as the in-cluster proxy serves them,
    /// instead of one per Ingress group.
    #[arg(long)]
    single_load_balancer: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Yaml,
    Json,
}

impl ModelArgs {
    fn options(&self, grouping: Grouping) -> BuildOptions {
        BuildOptions {
            controller_name: CONTROLLER_NAME.into(),
            ingress_class: Some(self.ingress_class.clone()),
            watch_ingress_without_class: self.watch_ingress_without_class,
            grouping,
            default_target_type: match self.default_target_type {
                TargetTypeArg::Ip => TargetType::Ip,
                TargetTypeArg::Instance => TargetType::Instance,
            },
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PlanOutput<'a> {
    diagnostics: &'a [Diagnostic],
    model: &'a DesiredState,
}

fn plan(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let (snapshot, mut diagnostics) = load_dir(&args.model.manifests)?;
    let grouping = if args.single_load_balancer {
        Grouping::Single("proxy".into())
    } else {
        Grouping::ByIngressGroup
    };
    let out = build(&snapshot, &args.model.options(grouping));
    diagnostics.extend(out.diagnostics);
    diagnostics.sort();
    let printed = PlanOutput {
        diagnostics: &diagnostics,
        model: &out.model,
    };
    let text = match args.output {
        OutputFormat::Yaml => serde_yaml_ng::to_string(&printed).context("rendering YAML")?,
        OutputFormat::Json => {
            serde_json::to_string_pretty(&printed).context("rendering JSON")? + "\n"
        }
    };
    print!("{text}");
    for d in &diagnostics {
        if d.severity >= Severity::Warning {
            eprintln!("{d}");
        }
    }
    let rejected = diagnostics.iter().any(|d| d.severity == Severity::Error);
    Ok(if rejected {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Plan(a) => plan(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tollgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
