# bash completion for skiffd.
#
# Install: skiffd completions bash > ~/.local/share/bash-completion/completions/skiffd
# (or source this file from ~/.bashrc). Written by hand; a test in
# server/src/cli.rs checks that it names every command and option.

_skiffd() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
    local serve_options="--data-dir --listen --unix --udp-time --udp-echo --raw-echo
        --ftp --ftp-passive --ftp-advertise --ftp-require-tls --ftp-hash-uploads
        --ftp-passive-timeout --tls-listen --tls-cert --tls-key --tls-handshake-timeout --max-body --idle-timeout --max-conns --max-conns-per-ip
        --out-high-water --out-total --backlog --exec-per-conn --exec-max
        --exec-max-time --exec-max-output --shutdown-grace --help"

    # The value of an option: a path, or something to type.
    case $prev in
        --data-dir)
            mapfile -t COMPREPLY < <(compgen -d -- "$cur")
            return ;;
        --unix | --tls-cert | --tls-key)
            mapfile -t COMPREPLY < <(compgen -f -- "$cur")
            return ;;
        --listen | --udp-time | --udp-echo | --raw-echo | --ftp | --tls-listen | \
            --ftp-passive | --ftp-advertise | --ftp-passive-timeout | \
            --tls-handshake-timeout | --max-body | --idle-timeout | \
            --max-conns | --max-conns-per-ip | --out-high-water | --out-total | \
            --backlog | --exec-per-conn | --exec-max | --exec-max-time | \
            --exec-max-output | --shutdown-grace | --quota)
            return ;;
    esac

    local words
    if ((COMP_CWORD == 1)); then
        words="serve user completions man help --version $serve_options"
    else
        case ${COMP_WORDS[1]} in
            completions) words="bash zsh fish elvish powershell --help" ;;
            man) words="--help" ;;
            help) words="serve user completions man" ;;
            user)
                # The user command: the first word that is not an option
                # or the value of --data-dir.
                local i sub=
                for ((i = 2; i < COMP_CWORD; i++)); do
                    case ${COMP_WORDS[i]} in
                        --data-dir) ((i++)) ;;
                        -*) ;;
                        *) sub=${COMP_WORDS[i]}; break ;;
                    esac
                done
                case $sub in
                    "") words="add del mod passwd list help --data-dir --help" ;;
                    add) words="--data-dir --quota --exec --password-stdin --help" ;;
                    del) words="--data-dir --purge --help" ;;
                    mod) words="--data-dir --quota --exec --no-exec --help" ;;
                    passwd) words="--data-dir --password-stdin --help" ;;
                    list) words="--data-dir --help" ;;
                    help) words="add del mod passwd list" ;;
                esac ;;
            # serve, or serve's options with no command before them
            *) words=$serve_options ;;
        esac
    fi
    mapfile -t COMPREPLY < <(compgen -W "$words" -- "$cur")
}

complete -F _skiffd skiffd
