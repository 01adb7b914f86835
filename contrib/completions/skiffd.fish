# fish completion for skiffd.
#
# Install: skiffd completions fish > ~/.config/fish/completions/skiffd.fish
# Written by hand; a test in server/src/cli.rs checks that it names every
# command and option.

complete -c skiffd -f

# The commands, and the top level's own options.
set -l top "__fish_use_subcommand"
complete -c skiffd -n $top -a serve -d 'Serve clients (the default)'
complete -c skiffd -n $top -a user -d 'Manage users: add, del, mod, passwd, list'
complete -c skiffd -n $top -a completions -d 'Print a completion script'
complete -c skiffd -n $top -a man -d 'Print the man page'
complete -c skiffd -n $top -a help -d 'Print the help of a command'
complete -c skiffd -n $top -s V -l version -d 'Print version'
complete -c skiffd -s h -l help -d 'Print help'

# serve, or serve's options with no command before them.
set -l serve "not __fish_seen_subcommand_from user completions man help"
complete -c skiffd -n $serve -l data-dir -x -a '(__fish_complete_directories)' -d 'Directory for users, homes and uploads'
complete -c skiffd -n $serve -l listen -x -d 'Framed protocol over TCP, HOST:PORT'
complete -c skiffd -n $serve -l unix -r -F -d 'Framed protocol over a Unix socket'
complete -c skiffd -n $serve -l udp-time -x -d 'UDP time service, HOST:PORT'
complete -c skiffd -n $serve -l udp-echo -x -d 'UDP echo service, HOST:PORT'
complete -c skiffd -n $serve -l raw-echo -x -d 'Raw TCP upper-casing echo, HOST:PORT'
complete -c skiffd -n $serve -l ftp -x -d 'FTP, HOST:PORT'
complete -c skiffd -n $serve -l ftp-passive -x -d 'Ports for passive data connections, LO-HI'
complete -c skiffd -n $serve -l ftp-advertise -x -d 'The address PASV replies announce'
complete -c skiffd -n $serve -l ftp-require-tls -d 'Refuse logins before AUTH TLS, data without PROT P'
complete -c skiffd -n $serve -l ftp-hash-uploads -d 'Hash FTP uploads (MD5) as they arrive'
complete -c skiffd -n $serve -l ftp-passive-timeout -x -d 'How long a passive listener waits for its client'
complete -c skiffd -n $serve -l tls-listen -x -d 'Framed protocol over TLS, HOST:PORT'
complete -c skiffd -n $serve -l tls-cert -r -F -d 'The TLS certificate (PEM)'
complete -c skiffd -n $serve -l tls-key -r -F -d 'The TLS private key (PEM)'
complete -c skiffd -n $serve -l tls-handshake-timeout -x -d 'How long a TLS handshake may take'
complete -c skiffd -n $serve -l max-body -x -d 'Largest request body, SIZE'
complete -c skiffd -n $serve -l idle-timeout -x -d 'Close connections idle this long'
complete -c skiffd -n $serve -l max-conns -x -d 'Most connections at once'
complete -c skiffd -n $serve -l max-conns-per-ip -x -d 'Most connections from one IP address'
complete -c skiffd -n $serve -l out-high-water -x -d 'Queued output that pauses input, SIZE'
complete -c skiffd -n $serve -l out-total -x -d 'Buffer memory of all connections, SIZE'
complete -c skiffd -n $serve -l backlog -x -d 'Listen backlog'
complete -c skiffd -n $serve -l exec-per-conn -x -d 'Most commands at once per connection'
complete -c skiffd -n $serve -l exec-max -x -d 'Most commands at once in all'
complete -c skiffd -n $serve -l exec-max-time -x -d 'Longest a command may run'
complete -c skiffd -n $serve -l exec-max-output -x -d 'Most output of one command, SIZE'
complete -c skiffd -n $serve -l shutdown-grace -x -d 'Time to flush clients on SIGTERM'

# user and its commands.
set -l user "__fish_seen_subcommand_from user"
set -l no_command "not __fish_seen_subcommand_from add del mod passwd list help"
complete -c skiffd -n "$user; and $no_command" -a add -d 'Add a user'
complete -c skiffd -n "$user; and $no_command" -a del -d 'Delete a user'
complete -c skiffd -n "$user; and $no_command" -a mod -d 'Change a quota or the right to run commands'
complete -c skiffd -n "$user; and $no_command" -a passwd -d 'Change a password'
complete -c skiffd -n "$user; and $no_command" -a list -d 'List users'
complete -c skiffd -n "$user; and $no_command" -a help -d 'Print the help of a user command'
complete -c skiffd -n $user -l data-dir -x -a '(__fish_complete_directories)' -d 'Directory for users, homes and uploads'
complete -c skiffd -n "$user; and __fish_seen_subcommand_from add" -l quota -x -d 'Disk quota, SIZE'
complete -c skiffd -n "$user; and __fish_seen_subcommand_from mod" -l quota -x -d 'New disk quota, SIZE or none'
complete -c skiffd -n "$user; and __fish_seen_subcommand_from add mod" -l exec -d 'Allow running commands'
complete -c skiffd -n "$user; and __fish_seen_subcommand_from mod" -l no-exec -d 'Forbid running commands'
complete -c skiffd -n "$user; and __fish_seen_subcommand_from del" -l purge -d 'Also delete the home and unfinished uploads'
complete -c skiffd -n "$user; and __fish_seen_subcommand_from add passwd" -l password-stdin -d 'Read the password from standard input'

# completions and help.
complete -c skiffd -n "__fish_seen_subcommand_from completions" -a 'bash zsh fish elvish powershell'
complete -c skiffd -n "__fish_seen_subcommand_from help; and not __fish_seen_subcommand_from user" -a 'serve user completions man'
