//! The admin commands' arguments: the clap structs and enums of `tollgate plans|keys|usage|
//! authorizers|whoami` (their doc comments are the `--help` text and the CLI reference).
//! Part of [`super`]; parses nothing by hand.
use super::*;

/// The admin commands, flattened into the binary's subcommands (boxed: the binary's
/// `Command` enum stays small).
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Manage usage plans and their keys (admin API).
    Plans(Box<PlansArgs>),
    /// Manage API keys (admin API).
    Keys(Box<KeysArgs>),
    /// Read and adjust quota usage (admin API).
    Usage(Box<UsageArgs>),
    /// Flush authorizer decision caches (admin API).
    Authorizers(Box<AuthorizersArgs>),
    /// Show what the admin token may do: its scope and the RPCs it allows (admin API).
    Whoami(Box<WhoamiArgs>),
}

/// `tollgate whoami`.
#[derive(Debug, Args)]
pub struct WhoamiArgs {
    /// Connection and output options.
    #[command(flatten)]
    pub opts: AdminOpts,
}

impl AdminCommand {
    /// The connection and output options, wherever on the line they were given.
    pub(super) fn opts(&self) -> &AdminOpts {
        match self {
            AdminCommand::Plans(a) => &a.opts,
            AdminCommand::Keys(a) => &a.opts,
            AdminCommand::Usage(a) => &a.opts,
            AdminCommand::Authorizers(a) => &a.opts,
            AdminCommand::Whoami(a) => &a.opts,
        }
    }
}

/// Options every admin command takes (before or after the subcommand).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Admin API options")]
pub struct AdminOpts {
    /// Admin API address; `host:port` means `http://host:port`.
    #[arg(
        long,
        global = true,
        env = "TOLLGATE_ADMIN_ADDR",
        value_name = "URL",
        default_value = DEFAULT_ADMIN_ADDR,
        value_parser = parse_admin_addr
    )]
    pub admin_addr: String,
    /// Read the admin token from this file (default: the TOLLGATE_ADMIN_TOKEN variable).
    #[arg(long, global = true, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// TLS: the CA (PEM) that signed the admin listener's certificate; implies https://.
    #[arg(
        long,
        global = true,
        env = "TOLLGATE_ADMIN_CA_FILE",
        value_name = "PATH"
    )]
    pub ca_file: Option<PathBuf>,
    /// mTLS: this client's certificate (PEM), with --key-file.
    #[arg(
        long,
        global = true,
        env = "TOLLGATE_ADMIN_CERT_FILE",
        value_name = "PATH",
        requires = "key_file"
    )]
    pub cert_file: Option<PathBuf>,
    /// mTLS: this client's private key (PEM), with --cert-file.
    #[arg(
        long,
        global = true,
        env = "TOLLGATE_ADMIN_KEY_FILE",
        value_name = "PATH",
        requires = "cert_file"
    )]
    pub key_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// `tollgate plans`.
#[derive(Debug, Args)]
pub struct PlansArgs {
    /// Connection and output options.
    #[command(flatten)]
    pub opts: AdminOpts,
    /// The action.
    #[command(subcommand)]
    pub command: PlansCmd,
}

/// `tollgate plans <action>`.
#[derive(Debug, Subcommand)]
pub enum PlansCmd {
    /// Create a usage plan from --file and/or flags (flags override the file).
    Create(PlanInput),
    /// Show a usage plan.
    Get {
        /// Plan id.
        id: String,
    },
    /// List every usage plan.
    List,
    /// Replace a usage plan: the file's plan (flags override it), or the current plan with the
    /// flags applied.
    Update(PlanInput),
    /// Delete a usage plan (refused while keys are associated with it).
    Delete {
        /// Plan id.
        id: String,
    },
    /// Associate an API key with a plan.
    AddKey {
        /// Plan id.
        plan_id: String,
        /// API key id.
        key_id: String,
    },
    /// Remove an API key from a plan.
    RemoveKey {
        /// Plan id.
        plan_id: String,
        /// API key id.
        key_id: String,
    },
    /// List the keys of a plan.
    Keys {
        /// Plan id.
        plan_id: String,
        /// Only keys whose name starts with this.
        #[arg(long)]
        name_prefix: Option<String>,
    },
}

/// `tollgate keys`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    /// Connection and output options.
    #[command(flatten)]
    pub opts: AdminOpts,
    /// The action.
    #[command(subcommand)]
    pub command: KeysCmd,
}

/// `tollgate keys create` flags.
#[derive(Debug, Clone, Default, Args)]
pub struct KeyCreate {
    /// Key id (default: generated).
    #[arg(long)]
    pub id: Option<String>,
    /// Display name.
    #[arg(long)]
    pub name: Option<String>,
    /// The key value, 20-128 characters (default: generated). Visible to other local users
    /// while the command runs; prefer the generated value.
    #[arg(long)]
    pub value: Option<String>,
    /// Enable the key (AWS's default is disabled).
    #[arg(long)]
    pub enabled: bool,
    /// External customer id.
    #[arg(long)]
    pub customer_id: Option<String>,
    /// Description.
    #[arg(long)]
    pub description: Option<String>,
    /// A tag (repeatable; the last value of a name wins).
    #[arg(long = "tag", value_name = "NAME=VALUE", value_parser = parse_tag)]
    pub tags: Vec<(String, String)>,
    /// Associate with this plan (repeatable).
    #[arg(long = "plan", value_name = "PLAN_ID")]
    pub plans: Vec<String>,
    /// Assign the plans to an identity instead of creating a key value: `principal=<id>` or
    /// `claim:<name>=<value>` (stages with that usage_identifier); the id is derived from it.
    #[arg(long, conflicts_with = "value", value_name = "IDENTITY")]
    pub identity: Option<String>,
}

/// `tollgate keys update` changes: at least one.
#[derive(Debug, Clone, Default, Args)]
#[group(required = true, multiple = true)]
pub struct KeyChanges {
    /// New display name.
    #[arg(long)]
    pub name: Option<String>,
    /// New description.
    #[arg(long)]
    pub description: Option<String>,
    /// New customer id.
    #[arg(long)]
    pub customer_id: Option<String>,
}

/// `tollgate keys <action>`.
#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Create an API key; its value is shown this once.
    Create(KeyCreate),
    /// Show an API key (never its value).
    Get {
        /// Key id.
        id: String,
    },
    /// List API keys.
    List {
        /// Only keys whose name starts with this.
        #[arg(long)]
        name_prefix: Option<String>,
        /// Only keys of this customer.
        #[arg(long)]
        customer_id: Option<String>,
    },
    /// Enable an API key.
    Enable {
        /// Key id.
        id: String,
    },
    /// Disable an API key.
    Disable {
        /// Key id.
        id: String,
    },
    /// Change an API key's name, description or customer id.
    Update {
        /// Key id.
        id: String,
        /// The changes.
        #[command(flatten)]
        changes: KeyChanges,
    },
    /// Delete an API key (and its plan associations).
    Delete {
        /// Key id.
        id: String,
    },
    /// Import keys from an AWS-style CSV file (`-`: stdin).
    Import {
        /// The CSV file.
        file: PathBuf,
        /// Fail the whole import on any bad row (default: skip and report it).
        #[arg(long)]
        fail_on_warnings: bool,
    },
    /// Show a key's live buckets and quotas.
    State {
        /// Key id.
        id: String,
    },
}

/// `tollgate usage`.
#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Connection and output options.
    #[command(flatten)]
    pub opts: AdminOpts,
    /// The action.
    #[command(subcommand)]
    pub command: UsageCmd,
}

/// `tollgate usage <action>`.
#[derive(Debug, Subcommand)]
pub enum UsageCmd {
    /// Daily usage of a plan's keys (or one key), both dates inclusive (UTC).
    Get {
        /// Plan id.
        #[arg(long)]
        plan: String,
        /// Only this key.
        #[arg(long)]
        key: Option<String>,
        /// First day, YYYY-MM-DD (default: the first day of the plan's current quota period,
        /// or today when the plan has no quota).
        #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
        start: Option<String>,
        /// Last day, YYYY-MM-DD (default: today, UTC).
        #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
        end: Option<String>,
    },
    /// Set a key's remaining quota in a plan for the current period.
    Update {
        /// Plan id.
        #[arg(long)]
        plan: String,
        /// Key id.
        #[arg(long)]
        key: String,
        /// The new remaining quota.
        #[arg(long)]
        remaining: u64,
    },
}

/// `tollgate authorizers`.
#[derive(Debug, Args)]
pub struct AuthorizersArgs {
    /// Connection and output options.
    #[command(flatten)]
    pub opts: AdminOpts,
    /// The action.
    #[command(subcommand)]
    pub command: AuthorizersCmd,
}

/// `tollgate authorizers <action>`.
#[derive(Debug, Subcommand)]
pub enum AuthorizersCmd {
    /// Drop the cached decisions of every authorizer a stage uses, on every instance.
    Flush {
        /// API id.
        #[arg(long)]
        api: String,
        /// Stage name.
        #[arg(long)]
        stage: String,
    },
}
