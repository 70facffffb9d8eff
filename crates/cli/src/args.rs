//! The command tree. One function ([`command`]) builds it so that every way in — `strata`,
//! `docker` (multi-call), internal roles — parses the same flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Strata: container images and layers, with docker's habits.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, disable_help_subcommand = true, max_term_width = 100)]
pub struct Cli {
    /// Store root (default: /var/lib/strata as root, $XDG_DATA_HOME/strata otherwise).
    #[arg(long, global = true, env = "STRATA_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// A registry (host[:port]) that may be reached over plain HTTP or with an unverified
    /// certificate; repeatable. Loopback registries always may.
    #[arg(
        long = "insecure-registry",
        global = true,
        value_name = "HOST",
        env = "STRATA_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    pub insecure_registry: Vec<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load images from a docker-archive or OCI archive (file or stdin) or an OCI layout directory.
    Load(LoadArgs),
    /// Save images to a docker-archive (default) or OCI archive.
    Save(SaveArgs),
    /// Make a one-layer image from a root filesystem directory or tarball.
    Import(ImportArgs),
    /// List images.
    #[command(alias = "list")]
    Images(ImagesArgs),
    /// Show the history of an image.
    History(HistoryArgs),
    /// Create a tag TARGET that refers to SOURCE.
    Tag(TagArgs),
    /// Remove one or more images.
    Rmi(RmiArgs),
    /// Display detailed information on images.
    Inspect(InspectArgs),
    /// Download an image from a registry.
    Pull(PullArgs),
    /// Upload an image to a registry.
    Push(PushArgs),
    /// Copy an image between registries and OCI layouts (docker://REF, oci:DIR[:REF]) without
    /// unpacking it.
    Copy(CopyArgs),
    /// Inspect manifests on a registry without pulling.
    #[command(subcommand)]
    Manifest(ManifestCommand),
    /// List the tags of a repository on a registry.
    Tags(TagsArgs),
    /// List the repositories of a registry.
    Catalog(CatalogArgs),
    /// Run a command in a new container.
    #[cfg(feature = "runtime")]
    Run(Box<RunArgs>),
    /// Create a new container without starting it.
    #[cfg(feature = "runtime")]
    Create(Box<RunArgs>),
    /// Start created or stopped containers.
    #[cfg(feature = "runtime")]
    Start(StartArgs),
    /// Attach this terminal's input and output to a running container.
    #[cfg(feature = "runtime")]
    Attach(AttachArgs),
    /// Run a command in a running container.
    #[cfg(feature = "runtime")]
    Exec(ExecArgs),
    /// Show a container's changes to its image's files, or compare two images or containers.
    Diff(DiffArgs),
    /// Show an image's layers: sizes, files added, changed and deleted, and wasted space.
    Layers(LayersArgs),
    /// List files of an image without running it.
    Ls(LsArgs),
    /// Print files of an image without running it.
    Cat(CatArgs),
    /// Rename a container.
    #[cfg(feature = "runtime")]
    Rename(RenameArgs),
    /// Copy files between a container and the host (CONTAINER:PATH; `-` is a tar stream).
    #[cfg(feature = "runtime")]
    Cp(CpArgs),
    /// Write a container's file system as a tar archive.
    #[cfg(feature = "runtime")]
    Export(ExportArgs),
    /// Restart containers.
    #[cfg(feature = "runtime")]
    Restart(StopArgs),
    /// Manage containers.
    #[cfg(feature = "runtime")]
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Manage volumes.
    #[cfg(feature = "runtime")]
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Make an image from a container's changes.
    #[cfg(feature = "runtime")]
    Commit(CommitArgs),
    /// List containers.
    #[cfg(feature = "runtime")]
    #[command(alias = "container-ls")]
    Ps(PsArgs),
    /// Remove one or more containers.
    #[cfg(feature = "runtime")]
    Rm(RmArgs),
    /// Stop running containers (SIGTERM, then SIGKILL after a timeout).
    #[cfg(feature = "runtime")]
    Stop(StopArgs),
    /// Send a signal to running containers.
    #[cfg(feature = "runtime")]
    Kill(KillArgs),
    /// Wait for containers to stop and print their exit codes.
    #[cfg(feature = "runtime")]
    Wait(WaitArgs),
    /// Show a container's output.
    #[cfg(feature = "runtime")]
    Logs(LogsArgs),
    /// Internal: the monitor of a detached container.
    #[cfg(feature = "runtime")]
    #[command(name = "__monitor", hide = true)]
    Monitor(MonitorArgs),
    /// Internal: the built-in runtime's own process (runs or joins a container).
    #[cfg(feature = "runtime")]
    #[command(name = "__builtin", hide = true)]
    Builtin(BuiltinArgs),
    /// Log in to a registry.
    Login(LoginArgs),
    /// Log out from a registry.
    Logout(LogoutArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Manage the store.
    #[command(subcommand)]
    System(SystemCommand),
}

/// `strata image …`
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List images.
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Display detailed information on images.
    Inspect(InspectArgs),
    /// Show the history of an image.
    History(HistoryArgs),
    /// Create a tag TARGET that refers to SOURCE.
    Tag(TagArgs),
    /// Remove one or more images.
    #[command(alias = "remove")]
    Rm(RmiArgs),
    /// Remove unused images.
    Prune(ImagePruneArgs),
    /// Download an image from a registry.
    Pull(PullArgs),
    /// Upload an image to a registry.
    Push(PushArgs),
    /// Draw images as a tree of their shared base layers.
    Tree(TreeArgs),
    /// Load images from an archive.
    Load(LoadArgs),
    /// Save images to an archive.
    Save(SaveArgs),
    /// Make a one-layer image from a root filesystem.
    Import(ImportArgs),
}

/// `strata system …`
#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Show disk usage.
    Df(DfArgs),
    /// Remove unused data.
    Prune(SystemPruneArgs),
    /// Verify every blob, reference and snapshot.
    Check(CheckArgs),
}

/// Output formats of listing commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// Human-readable table.
    #[default]
    Table,
    /// JSON, for scripts.
    Json,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from FILE (or an OCI layout directory) instead of stdin.
    #[arg(short, long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Archive formats for `save`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ArchiveFormat {
    /// `docker save` / `docker load` format.
    #[default]
    #[value(alias = "docker-archive")]
    Docker,
    /// OCI image layout in a tar.
    #[value(alias = "oci-archive")]
    Oci,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Write to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Archive format.
    #[arg(long, value_enum, default_value_t)]
    pub format: ArchiveFormat,
    /// Images to save.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Apply a Dockerfile instruction to the image config (CMD, ENTRYPOINT, ENV, WORKDIR, USER, EXPOSE, LABEL, VOLUME, STOPSIGNAL).
    #[arg(short, long = "change", value_name = "INSTRUCTION")]
    pub changes: Vec<String>,
    /// Commit message for the history entry.
    #[arg(short, long)]
    pub message: Option<String>,
    /// Platform of the image (OS/ARCH[/VARIANT]).
    #[arg(long)]
    pub platform: Option<String>,
    /// Root filesystem: a directory, a tarball (plain, gzip or zstd) or - for stdin.
    pub source: String,
    /// Name for the image, REPOSITORY[:TAG].
    pub reference: Option<String>,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Show all images (default hides none: strata keeps no intermediate images).
    #[arg(short, long)]
    pub all: bool,
    /// Only show image IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Show digests.
    #[arg(long)]
    pub digests: bool,
    /// Don't truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Filter: reference=PATTERN, dangling=true|false, before=IMAGE, since=IMAGE, label=KEY[=VALUE].
    #[arg(short, long = "filter", value_name = "FILTER")]
    pub filters: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Draw images as a tree of shared base layers.
    #[arg(long)]
    pub tree: bool,
    /// Only images whose name matches REPOSITORY[:TAG] (`*` wildcards allowed).
    pub reference: Option<String>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Don't truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Only show image IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Print sizes and dates in human-readable form.
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set)]
    pub human: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// The image.
    pub image: String,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    /// Existing image.
    pub source: String,
    /// New name.
    pub target: String,
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Force removal of an image with several tags or used by a container.
    #[arg(short, long)]
    pub force: bool,
    /// Images: ID, ID prefix, name[:tag] or name@digest.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Format: json (default).
    #[arg(short, long)]
    pub format: Option<String>,
    /// Images.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TreeArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, Args, Clone)]
pub struct PruneFilterArgs {
    /// Remove all unused images, not just dangling ones.
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    pub force: bool,
    /// Filter: until=DURATION|TIMESTAMP (only images created before).
    #[arg(long = "filter", value_name = "FILTER")]
    pub filters: Vec<String>,
    /// Remove images (tagged too) not pulled, loaded, run or committed for DURATION (e.g. 72h, 14d).
    #[arg(long, value_name = "DURATION")]
    pub unused_for: Option<String>,
    /// Remove least-recently-used images until the store holds at most SIZE (e.g. 10GB, 500MiB).
    #[arg(long, value_name = "SIZE")]
    pub keep_bytes: Option<String>,
    /// List what would be removed and the space freed, without removing anything.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ImagePruneArgs {
    #[command(flatten)]
    pub common: PruneFilterArgs,
}

#[derive(Debug, Args)]
pub struct SystemPruneArgs {
    #[command(flatten)]
    pub common: PruneFilterArgs,
    /// Also remove volumes no container uses.
    #[arg(long)]
    pub volumes: bool,
}

#[derive(Debug, Args)]
pub struct DfArgs {
    /// Show per-image, per-layer and per-volume usage.
    #[arg(short, long)]
    pub verbose: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Remove what is broken (corrupt blobs, dangling references, broken snapshots).
    #[arg(long)]
    pub repair: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// How `pull` and `push` report progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// A bar on a terminal, status lines otherwise.
    Auto,
    /// Status lines and a periodic summary, never a bar.
    Plain,
    /// One JSON object per event on stdout.
    Json,
    /// Nothing but the result.
    Quiet,
}

/// `strata pull`
#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image to pull: NAME[:TAG|@DIGEST].
    pub image: String,
    /// Platform to pull from a multi-platform image: OS/ARCH[/VARIANT] (default: this host's).
    #[arg(long)]
    pub platform: Option<String>,
    /// Print only the image reference.
    #[arg(short, long)]
    pub quiet: bool,
    /// Progress output.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// Layers downloaded at once.
    #[arg(long, default_value_t = 3, env = "STRATA_MAX_CONCURRENT_DOWNLOADS", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub max_concurrent_downloads: u16,
}

/// `strata login`
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Registry (default: Docker Hub).
    pub server: Option<String>,
    /// Username.
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (insecure: it shows in the process list; prefer --password-stdin).
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from stdin.
    #[arg(long)]
    pub password_stdin: bool,
}

/// `strata logout`
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Registry (default: Docker Hub).
    pub server: Option<String>,
}

/// Layer compression for `push --compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LayerCompression {
    /// gzip (what every client reads).
    Gzip,
    /// zstd (smaller and faster to decompress; needs a current client).
    Zstd,
}

/// `strata push`
#[derive(Debug, Args)]
pub struct PushArgs {
    /// Image to push: NAME[:TAG].
    pub image: String,
    /// Print only the pushed manifest digest.
    #[arg(short, long)]
    pub quiet: bool,
    /// Re-compress layers before pushing.
    #[arg(long, value_enum)]
    pub compression: Option<LayerCompression>,
    /// Progress output.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// Blobs uploaded at once.
    #[arg(long, default_value_t = 3, env = "STRATA_MAX_CONCURRENT_UPLOADS", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub max_concurrent_uploads: u16,
}

/// `strata manifest …`
#[derive(Debug, Subcommand)]
pub enum ManifestCommand {
    /// Show an image's manifest or index as the registry serves it.
    Inspect(ManifestInspectArgs),
}

/// `strata manifest inspect`
#[derive(Debug, Args)]
pub struct ManifestInspectArgs {
    /// NAME[:TAG|@DIGEST]
    pub image: String,
    /// Print the bytes exactly as served.
    #[arg(long)]
    pub raw: bool,
    /// Resolve an index to this platform's manifest: OS/ARCH[/VARIANT].
    #[arg(long)]
    pub platform: Option<String>,
}

/// `strata tags`
#[derive(Debug, Args)]
pub struct TagsArgs {
    /// Repository: NAME (e.g. busybox, registry.example.com/team/app).
    pub repository: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

/// `strata catalog`
#[derive(Debug, Args)]
pub struct CatalogArgs {
    /// Registry: HOST[:PORT].
    pub registry: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

/// `strata copy`
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Source: docker://REF, oci:DIR[:REF], or REF.
    pub source: String,
    /// Destination: docker://REF, oci:DIR[:REF], or REF.
    pub destination: String,
    /// Copy every platform of a multi-platform image.
    #[arg(short, long)]
    pub all: bool,
    /// Platform to copy from a multi-platform image: OS/ARCH[/VARIANT] (default: this host's).
    #[arg(long, conflicts_with = "all")]
    pub platform: Option<String>,
    /// Print only the digest written.
    #[arg(short, long)]
    pub quiet: bool,
    /// Progress output.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
}

/// `strata run`
#[cfg(feature = "runtime")]
#[derive(Debug, Args)]
#[command(trailing_var_arg = true)]
pub struct RunArgs {
    /// Run in the background and print the container ID.
    #[arg(short, long)]
    pub detach: bool,
    /// Keep stdin open (without it the container's stdin is /dev/null, as in docker).
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the container a terminal (a pty held by its monitor, sized like this one).
    #[arg(short, long)]
    pub tty: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Assign a name to the container.
    #[arg(long)]
    pub name: Option<String>,
    /// Set an environment variable (KEY=VAL, or KEY to pass this shell's value).
    #[arg(short = 'e', long = "env", value_name = "KEY[=VAL]")]
    pub env: Vec<String>,
    /// Read environment variables from a file (KEY=VAL lines; '#' comments).
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// User: UID[:GID] or NAME[:GROUP].
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
    /// Overwrite the image's ENTRYPOINT ("" clears it).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Container host name.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Mount the container's root file system read-only.
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Run an init as PID 1 (the strata binary) that reaps zombies and forwards signals
    /// (built-in runtime).
    #[arg(long)]
    pub init: bool,
    /// Network: none (a private namespace with loopback; the default) or host.
    #[arg(long, default_value = "none", value_parser = ["none", "host", "private"])]
    pub network: String,
    /// Add a Linux capability.
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    /// Drop a Linux capability.
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// Memory limit (e.g. 64m, 1g).
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Number of CPUs (e.g. 0.5).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Process limit (-1: unlimited).
    #[arg(long = "pids-limit")]
    pub pids_limit: Option<i64>,
    /// Bind a host directory: HOST:CONTAINER[:ro] (a missing host directory is created, as docker does).
    #[arg(short = 'v', long = "volume")]
    pub volume: Vec<String>,
    /// Mount: type=bind|tmpfs,source=…,target=…[,readonly].
    #[arg(long)]
    pub mount: Vec<String>,
    /// Runtime: builtin (strata's own, the default), runc, crun, or a path to an OCI runtime.
    #[arg(long, default_value = "builtin", env = "STRATA_RUNTIME")]
    pub runtime: String,
    /// Image to run.
    pub image: String,
    /// Command and arguments (default: the image's).
    #[arg(allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `strata ps`
#[cfg(feature = "runtime")]
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default: running only).
    #[arg(short, long)]
    pub all: bool,
    /// Only IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not truncate IDs and commands.
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Filter: status=created|running|exited|…, name=NAME, id=ID, exited=CODE, ancestor=IMAGE.
    #[arg(short, long)]
    pub filter: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

/// `strata rm`
#[cfg(feature = "runtime")]
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill and remove a running container.
    #[arg(short, long)]
    pub force: bool,
    /// Remove the anonymous volumes it used too.
    #[arg(short, long)]
    pub volumes: bool,
    /// Containers (names or IDs).
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `strata stop`
#[cfg(feature = "runtime")]
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(short = 't', long = "time", default_value_t = 10)]
    pub time: u64,
    /// Containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `strata kill`
#[cfg(feature = "runtime")]
#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal (name or number).
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    /// Containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `strata wait`
#[cfg(feature = "runtime")]
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `strata logs`
#[cfg(feature = "runtime")]
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow the output until the container stops.
    #[arg(short, long)]
    pub follow: bool,
    /// Show only the last N lines ("all" for everything).
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Prefix each line with its time.
    #[arg(short, long)]
    pub timestamps: bool,
    /// Container.
    pub container: String,
}

/// `strata __monitor`
#[cfg(feature = "runtime")]
#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Start the container only once a first client is attached.
    #[arg(long)]
    pub wait_attach: bool,
    /// Container ID.
    pub id: String,
}

/// `strata __builtin`
#[cfg(feature = "runtime")]
#[derive(Debug, Args)]
pub struct BuiltinArgs {
    /// The runtime's state directory.
    #[arg(long)]
    pub state: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub role: BuiltinRole,
}

/// The built-in runtime's roles.
#[cfg(feature = "runtime")]
#[derive(Debug, Subcommand)]
pub enum BuiltinRole {
    /// Run a bundle's container to its end.
    Run {
        /// The bundle.
        #[arg(long)]
        bundle: PathBuf,
        /// Send the terminal's master to this unix socket instead of relaying it.
        #[arg(long)]
        console_socket: Option<PathBuf>,
        /// Container ID.
        id: String,
    },
    /// Run a process (OCI process JSON) in a running container.
    Exec {
        /// The process file.
        #[arg(long)]
        process: PathBuf,
        /// Return once it started.
        #[arg(long)]
        detach: bool,
        /// Container ID.
        id: String,
    },
}

/// `strata start`
#[cfg(feature = "runtime")]
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Attach: print the container's output until it exits, and exit with its status.
    #[arg(short, long)]
    pub attach: bool,
    /// Attach this process's stdin to the container's.
    #[arg(short, long)]
    pub interactive: bool,
    /// The key sequence that detaches from a container with a terminal.
    #[arg(long, default_value = "ctrl-p,ctrl-q")]
    pub detach_keys: String,
    /// Containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `strata attach`
#[cfg(feature = "runtime")]
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Do not attach stdin.
    #[arg(long)]
    pub no_stdin: bool,
    /// Pass the signals this process receives to the container (without a terminal).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub sig_proxy: bool,
    /// The key sequence that detaches from a container with a terminal.
    #[arg(long, default_value = "ctrl-p,ctrl-q")]
    pub detach_keys: String,
    /// The container.
    pub container: String,
}

/// `strata exec`
#[cfg(feature = "runtime")]
#[derive(Debug, Args)]
#[command(trailing_var_arg = true)]
pub struct ExecArgs {
    /// Run in the background.
    #[arg(short, long)]
    pub detach: bool,
    /// Keep stdin open (else the command's stdin is /dev/null).
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the command a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Set an environment variable.
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Working directory.
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// User: UID[:GID] or NAME[:GROUP].
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
    /// Container.
    pub container: String,
    /// Command and arguments.
    #[arg(required = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `strata container diff`
#[cfg(feature = "runtime")]
#[derive(Debug, Args)]
pub struct ContainerDiffArgs {
    /// Container.
    pub container: String,
}

/// `strata diff`
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// CONTAINER (its changes to its image, as `docker diff`), or two images or containers to
    /// compare: local names or IDs, docker://REF, oci:DIR[:REF], docker-archive:FILE[:REF].
    #[arg(required = true, num_args = 1..=2, value_name = "TARGET")]
    pub targets: Vec<String>,
    /// Show counts and bytes added, deleted and changed per top-level directory.
    #[arg(long)]
    pub stat: bool,
    /// Show unified diffs of changed text files (a one-line note for binary ones).
    #[arg(long)]
    pub content: bool,
    /// Compare installed packages (dpkg, apk, Python).
    #[arg(long)]
    pub packages: bool,
    /// Compare the images' configs (Env, Cmd, Entrypoint, WorkingDir, User, ports, labels,
    /// platform, history, layers).
    #[arg(long)]
    pub config: bool,
    /// Show, for each change, the layer of each image that made it.
    #[arg(long)]
    pub layers: bool,
    /// Fields not to compare, comma-separated: type, content, size, mode, uid, gid, owner,
    /// link, mtime, dev (repeatable).
    #[arg(long, value_name = "FIELDS")]
    pub ignore: Vec<String>,
    /// Leave out paths matching GLOB and what is below them (`*`, `?`, `**`; anchored at the
    /// root with a leading `/`, else at any depth; repeatable).
    #[arg(long = "ignore-path", value_name = "GLOB")]
    pub ignore_path: Vec<String>,
    /// Platform of remote images (OS/ARCH[/VARIANT]).
    #[arg(long)]
    pub platform: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// `strata layers`
#[derive(Debug, Args)]
pub struct LayersArgs {
    /// The image (or container, docker://REF, oci:DIR[:REF], docker-archive:FILE[:REF]).
    pub image: String,
    /// Fail (exit 1) when more than SIZE bytes are wasted (e.g. 10MB).
    #[arg(long, value_name = "SIZE")]
    pub max_wasted_bytes: Option<String>,
    /// Fail (exit 1) when the efficiency is below F (a fraction, e.g. 0.95).
    #[arg(long, value_name = "F")]
    pub min_efficiency: Option<f64>,
    /// How many wasted files to list (0: all).
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub top: usize,
    /// Platform of remote images (OS/ARCH[/VARIANT]).
    #[arg(long)]
    pub platform: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// `strata ls`
#[derive(Debug, Args)]
pub struct LsArgs {
    /// The image (or container, docker://REF, oci:DIR[:REF], docker-archive:FILE[:REF]).
    pub image: String,
    /// Directory or file in the image.
    #[arg(default_value = "/")]
    pub path: String,
    /// Long listing: type and mode, owner, size, time, and the layer each entry comes from.
    #[arg(short = 'l', long)]
    pub long: bool,
    /// List subdirectories recursively.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Platform of remote images (OS/ARCH[/VARIANT]).
    #[arg(long)]
    pub platform: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// `strata cat`
#[derive(Debug, Args)]
pub struct CatArgs {
    /// The image (or container, docker://REF, oci:DIR[:REF], docker-archive:FILE[:REF]).
    pub image: String,
    /// Files in the image (symlinks are followed inside the image).
    #[arg(required = true)]
    pub paths: Vec<String>,
    /// Platform of remote images (OS/ARCH[/VARIANT]).
    #[arg(long)]
    pub platform: Option<String>,
}

/// `strata commit`
#[cfg(feature = "runtime")]
#[derive(Debug, Args)]
pub struct CommitArgs {
    /// Commit message.
    #[arg(short, long)]
    pub message: Option<String>,
    /// Author.
    #[arg(short, long)]
    pub author: Option<String>,
    /// Apply a Dockerfile instruction (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR, STOPSIGNAL).
    #[arg(short, long)]
    pub change: Vec<String>,
    /// Pause a running container while committing.
    #[arg(short, long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub pause: bool,
    /// Layer compression.
    #[arg(long, value_enum, default_value = "gzip")]
    pub compression: LayerCompression,
    /// Container.
    pub container: String,
    /// Repository[:tag] for the new image.
    pub reference: Option<String>,
}

/// `strata rename`
#[cfg(feature = "runtime")]
#[derive(Debug, Args)]
pub struct RenameArgs {
    /// Container.
    pub container: String,
    /// New name.
    pub new_name: String,
}

/// `strata container prune`
#[cfg(feature = "runtime")]
#[derive(Debug, Args)]
pub struct ContainerPruneArgs {
    /// Do not ask for confirmation.
    #[arg(short, long)]
    pub force: bool,
}

/// `strata container inspect`
#[cfg(feature = "runtime")]
#[derive(Debug, Args)]
pub struct ContainerInspectArgs {
    /// Containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `strata container …`
#[cfg(feature = "runtime")]
#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// List containers.
    #[command(alias = "list", alias = "ps")]
    Ls(PsArgs),
    /// Remove containers.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Display detailed information on containers.
    Inspect(ContainerInspectArgs),
    /// Remove all stopped containers.
    Prune(ContainerPruneArgs),
    /// Rename a container.
    Rename(RenameArgs),
    /// Run a command in a new container.
    Run(Box<RunArgs>),
    /// Create a new container.
    Create(Box<RunArgs>),
    /// Start containers.
    Start(StartArgs),
    /// Attach to a running container.
    Attach(AttachArgs),
    /// Stop containers.
    Stop(StopArgs),
    /// Restart containers.
    Restart(StopArgs),
    /// Kill containers.
    Kill(KillArgs),
    /// Wait for containers.
    Wait(WaitArgs),
    /// Show a container's output.
    Logs(LogsArgs),
    /// Run a command in a running container.
    Exec(ExecArgs),
    /// Show a container's changes.
    Diff(ContainerDiffArgs),
    /// Make an image from a container.
    Commit(CommitArgs),
}

/// `strata cp`
#[cfg(feature = "runtime")]
#[derive(Debug, Args)]
pub struct CpArgs {
    /// CONTAINER:SRC, a host path, or `-` (a tar stream on stdin).
    pub source: String,
    /// CONTAINER:DEST, a host path, or `-` (a tar stream on stdout).
    pub destination: String,
}

/// `strata export`
#[cfg(feature = "runtime")]
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write to a file instead of stdout.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Container.
    pub container: String,
}

/// `strata volume …`
#[cfg(feature = "runtime")]
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume.
    Create(VolumeCreateArgs),
    /// List volumes.
    #[command(alias = "list")]
    Ls(VolumeLsArgs),
    /// Display detailed information on volumes.
    Inspect(VolumeNamesArgs),
    /// Remove volumes.
    #[command(alias = "remove")]
    Rm(VolumeNamesArgs),
    /// Remove volumes no container uses.
    Prune(ContainerPruneArgs),
}

/// `strata volume create`
#[cfg(feature = "runtime")]
#[derive(Debug, Args)]
pub struct VolumeCreateArgs {
    /// Name (random when omitted).
    pub name: Option<String>,
}

/// `strata volume ls`
#[cfg(feature = "runtime")]
#[derive(Debug, Args)]
pub struct VolumeLsArgs {
    /// Only names.
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

/// Volume names.
#[cfg(feature = "runtime")]
#[derive(Debug, Args)]
pub struct VolumeNamesArgs {
    /// Volumes.
    #[arg(required = true)]
    pub names: Vec<String>,
}
