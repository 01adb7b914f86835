//! The commands of `skiffd` and their options: what the parser reads
//! words against, what `--help` prints, and what the completion scripts
//! and the man page are checked against.

use super::{Command, Default, Opt};

const fn opt(long: &'static str, value: &'static str, help: &'static str, default: Default) -> Opt {
    Opt {
        long,
        value: Some(value),
        help,
        default,
        repeats: false,
    }
}

const fn switch(long: &'static str, help: &'static str) -> Opt {
    Opt {
        long,
        value: None,
        help,
        default: Default::None,
        repeats: false,
    }
}

/// A repeatable listener option, whose default is served only when no
/// listener at all is named.
const fn listener(
    long: &'static str,
    value: &'static str,
    help: &'static str,
    note: &'static str,
) -> Opt {
    Opt {
        long,
        value: Some(value),
        help,
        default: Default::Note(note),
        repeats: true,
    }
}

/// The whole program.
pub static SKIFFD: Command = Command {
    name: "skiffd",
    path: "skiffd",
    usage: "[COMMAND]",
    about: "skiffd: a small, fast, single-threaded network server on one mio loop",
    positional: None,
    options: &[],
    commands: &[&SERVE, &COMPLETIONS, &MAN, &USER],
    hidden: false,
    after: "With no command, or with serve's flags and no command \
            (skiffd --listen 127.0.0.1:7000), skiffd serves.",
};

pub static SERVE: Command = Command {
    name: "serve",
    path: "skiffd serve",
    usage: "[OPTIONS]",
    about: "Serve clients (the default when no command is given)",
    positional: None,
    options: &[
        opt(
            "data-dir",
            "DIR",
            "Directory for users, homes and uploads, made absolute at startup",
            Default::Value("./skiff-data"),
        ),
        listener(
            "listen",
            "HOST:PORT",
            "Framed protocol over TCP, HOST:PORT (port 0 picks a free one)",
            "127.0.0.1:9999, if no listener flag is given",
        ),
        listener("unix", "PATH", "Framed protocol over a Unix socket", "none"),
        listener(
            "udp-time",
            "HOST:PORT",
            "UDP time service: a datagram holding a strftime format gets the time",
            "127.0.0.1:9998, if no listener flag is given",
        ),
        listener(
            "udp-echo",
            "HOST:PORT",
            "UDP echo service",
            "127.0.0.1:9997, if no listener flag is given",
        ),
        listener(
            "raw-echo",
            "HOST:PORT",
            "Raw TCP upper-casing echo (no frames; try it with nc)",
            "127.0.0.1:9996, if no listener flag is given",
        ),
        listener(
            "ftp",
            "HOST:PORT",
            "FTP, for the clients people have (curl, lftp, FileZilla, ftplib): see docs/ftp.md",
            "127.0.0.1:2121, if no listener flag is given",
        ),
        opt(
            "ftp-passive",
            "LO-HI",
            "Ports for FTP's passive data connections, LO-HI (open them in a firewall)",
            Default::Note("any free port"),
        ),
        opt(
            "ftp-advertise",
            "ADDR",
            "The address FTP's PASV replies announce, for a server behind NAT",
            Default::Note("the address the client connected to"),
        ),
        Opt {
            default: Default::Note("off"),
            ..switch(
                "ftp-require-tls",
                "FTP refuses USER/PASS before AUTH TLS, and data connections without PROT P \
                 (see docs/ftp.md)",
            )
        },
        Opt {
            default: Default::Note("off"),
            ..switch(
                "ftp-hash-uploads",
                "FTP hashes uploads (MD5) as they arrive; otherwise the first HASH/XMD5 \
                 reads the file",
            )
        },
        opt(
            "ftp-passive-timeout",
            "DURATION",
            "How long an FTP passive listener waits for its client to connect (then its \
             port is freed and the transfer gets 425), and an open data connection for a \
             transfer command (e.g. 30, 10s, 500ms)",
            Default::Value("30s"),
        ),
        listener(
            "tls-listen",
            "HOST:PORT",
            "Framed protocol over TLS, HOST:PORT (connect with skiff --addr tls://HOST:PORT)",
            "127.0.0.1:9995, if no listener flag is given",
        ),
        opt(
            "tls-cert",
            "FILE",
            "The TLS certificate (PEM; the chain, server's first); needs --tls-key",
            Default::Note("a self-signed one, made on first start in DATA_DIR/tls/"),
        ),
        opt(
            "tls-key",
            "FILE",
            "The TLS certificate's private key (PEM; ECDSA or Ed25519, not RSA)",
            Default::Note("the key made with the certificate, DATA_DIR/tls/key.pem"),
        ),
        opt(
            "tls-handshake-timeout",
            "DURATION",
            "How long a TLS handshake may take: on the TLS listener, after FTP's AUTH TLS, \
             and on an FTP data connection under PROT P (whose transfer then gets 425 or \
             426; the session goes on)",
            Default::Value("10s"),
        ),
        opt(
            "max-body",
            "SIZE",
            "Largest request body (bodies are streamed, so this can be large)",
            Default::Value("64G"),
        ),
        opt(
            "idle-timeout",
            "DURATION",
            "Close connections idle this long (e.g. 300, 5m, 30s)",
            Default::Value("300s"),
        ),
        opt(
            "max-conns",
            "N",
            "Most connections at once; more get `too_busy`",
            Default::Value("65536"),
        ),
        opt(
            "max-conns-per-ip",
            "N",
            "Most connections from one IP address; more get `too_busy`",
            Default::Value("16384"),
        ),
        opt(
            "out-high-water",
            "SIZE",
            "Queued output per connection above which its input is paused",
            Default::Value("256K"),
        ),
        opt(
            "out-total",
            "SIZE",
            "Buffer memory all connections together may hold. Above half of it connections \
             pause at 16 KiB of output; above it the ones holding the most are closed",
            Default::Value("64M"),
        ),
        opt(
            "backlog",
            "N",
            "Listen backlog (the kernel caps it at net.core.somaxconn)",
            Default::Value("4096"),
        ),
        opt(
            "exec-per-conn",
            "N",
            "Most commands (exec) running at once per connection",
            Default::Value("8"),
        ),
        opt(
            "exec-max",
            "N",
            "Most commands running at once in all",
            Default::Value("64"),
        ),
        opt(
            "exec-max-time",
            "DURATION",
            "Longest a command may run; also caps a request's `timeout`",
            Default::Value("1h"),
        ),
        opt(
            "exec-max-output",
            "SIZE",
            "Most output one command may produce before it is ended",
            Default::Value("16G"),
        ),
        opt(
            "shutdown-grace",
            "DURATION",
            "How long SIGINT/SIGTERM may take to flush clients before exiting",
            Default::Value("5s"),
        ),
    ],
    commands: &[],
    hidden: false,
    after: "\
Listeners: each listener flag may be given more than once. Give none of
them and skiffd serves the loopback defaults shown above. Name any one,
and skiffd serves exactly the listeners you named and nothing else:
--listen 127.0.0.1:7000 alone serves no UDP and no raw echo.",
};

pub static COMPLETIONS: Command = Command {
    name: "completions",
    path: "skiffd completions",
    usage: "<SHELL>",
    about: "Print a completion script for SHELL \
            (e.g. skiffd completions bash > ~/.local/share/bash-completion/completions/skiffd)",
    positional: Some(("SHELL", "The shell: bash, zsh, fish, elvish or powershell")),
    options: &[],
    commands: &[],
    hidden: false,
    after: "",
};

pub static MAN: Command = Command {
    name: "man",
    path: "skiffd man",
    usage: "",
    about: "Print the man page (roff): skiffd man > skiffd.1",
    positional: None,
    options: &[],
    commands: &[],
    hidden: true,
    after: "",
};

/// `--data-dir` of `user` and of each of its commands.
pub(super) const USER_DATA_DIR: Opt = opt(
    "data-dir",
    "DIR",
    "Directory for users, homes and uploads",
    Default::Value("./skiff-data"),
);

const PASSWORD_STDIN: Opt = switch(
    "password-stdin",
    "Read the password from the first line of standard input instead of the terminal",
);

pub static USER: Command = Command {
    name: "user",
    path: "skiffd user",
    usage: "[OPTIONS] <COMMAND>",
    about: "Manage users: add, del, mod, passwd, list",
    positional: None,
    options: &[USER_DATA_DIR],
    commands: &[&USER_ADD, &USER_DEL, &USER_MOD, &USER_PASSWD, &USER_LIST],
    hidden: false,
    after: "",
};

pub static USER_ADD: Command = Command {
    name: "add",
    path: "skiffd user add",
    usage: "[OPTIONS] <NAME>",
    about: "Add a user",
    positional: Some((
        "NAME",
        "Login name: 1 to 32 of a-z 0-9 _ . -, not starting with . or -",
    )),
    options: &[
        USER_DATA_DIR,
        opt(
            "quota",
            "SIZE",
            "Disk quota: bytes, or with a suffix (10M = 10 MiB, 1G = 1 GiB)",
            Default::Note("unlimited"),
        ),
        switch("exec", "Allow running commands (exec)"),
        PASSWORD_STDIN,
    ],
    commands: &[],
    hidden: false,
    after: "",
};

pub static USER_DEL: Command = Command {
    name: "del",
    path: "skiffd user del",
    usage: "[OPTIONS] <NAME>",
    about: "Delete a user (their home is kept unless --purge)",
    positional: Some(("NAME", "Login name")),
    options: &[
        USER_DATA_DIR,
        switch(
            "purge",
            "Also delete the user's home and unfinished uploads",
        ),
    ],
    commands: &[],
    hidden: false,
    after: "",
};

pub static USER_MOD: Command = Command {
    name: "mod",
    path: "skiffd user mod",
    usage: "[OPTIONS] <--quota <SIZE|none>|--exec|--no-exec> <NAME>",
    about: "Change a quota or the right to run commands (at the user's next login)",
    positional: Some(("NAME", "Login name")),
    options: &[
        USER_DATA_DIR,
        opt(
            "quota",
            "SIZE|none",
            "New disk quota: bytes, or with a suffix (10M = 10 MiB), or `none` for unlimited",
            Default::None,
        ),
        switch("exec", "Allow running commands (exec)"),
        switch("no-exec", "Forbid running commands"),
    ],
    commands: &[],
    hidden: false,
    after: "",
};

pub static USER_PASSWD: Command = Command {
    name: "passwd",
    path: "skiffd user passwd",
    usage: "[OPTIONS] <NAME>",
    about: "Change a password",
    positional: Some(("NAME", "Login name")),
    options: &[USER_DATA_DIR, PASSWORD_STDIN],
    commands: &[],
    hidden: false,
    after: "",
};

pub static USER_LIST: Command = Command {
    name: "list",
    path: "skiffd user list",
    usage: "[OPTIONS]",
    about: "List users",
    positional: None,
    options: &[USER_DATA_DIR],
    commands: &[],
    hidden: false,
    after: "",
};
