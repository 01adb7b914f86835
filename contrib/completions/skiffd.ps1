# PowerShell completion for skiffd.
#
# Install: skiffd completions powershell >> $PROFILE
# Written by hand; a test in server/src/cli.rs checks that it names every
# command and option.

Register-ArgumentCompleter -Native -CommandName skiffd -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $serveOptions = @(
        '--data-dir', '--listen', '--unix', '--udp-time', '--udp-echo', '--raw-echo',
        '--ftp', '--ftp-passive', '--ftp-advertise', '--ftp-require-tls', '--ftp-hash-uploads',
        '--ftp-passive-timeout', '--tls-listen', '--tls-cert', '--tls-key',
        '--tls-handshake-timeout', '--max-body', '--idle-timeout', '--max-conns',
        '--max-conns-per-ip', '--out-high-water', '--out-total', '--backlog',
        '--exec-per-conn', '--exec-max', '--exec-max-time', '--exec-max-output',
        '--shutdown-grace', '--help')
    $userOptions = @{
        ''       = @('add', 'del', 'mod', 'passwd', 'list', 'help', '--data-dir', '--help')
        'add'    = @('--data-dir', '--quota', '--exec', '--password-stdin', '--help')
        'del'    = @('--data-dir', '--purge', '--help')
        'mod'    = @('--data-dir', '--quota', '--exec', '--no-exec', '--help')
        'passwd' = @('--data-dir', '--password-stdin', '--help')
        'list'   = @('--data-dir', '--help')
        'help'   = @('add', 'del', 'mod', 'passwd', 'list')
    }

    # The words before the one being completed, the program's name left out.
    $words = @($commandAst.CommandElements | Select-Object -Skip 1 |
        Where-Object { $_.Extent.EndOffset -lt $cursorPosition } |
        ForEach-Object { $_.ToString() })

    $candidates = @()
    if ($words.Count -eq 0) {
        $candidates = @('serve', 'user', 'completions', 'man', 'help', '--version') + $serveOptions
    } elseif ($words[0] -eq 'serve' -or $words[0] -like '-*') {
        $candidates = $serveOptions
    } elseif ($words[0] -eq 'completions') {
        $candidates = @('bash', 'zsh', 'fish', 'elvish', 'powershell')
    } elseif ($words[0] -eq 'help') {
        $candidates = @('serve', 'user', 'completions', 'man')
    } elseif ($words[0] -eq 'man') {
        $candidates = @('--help')
    } elseif ($words[0] -eq 'user') {
        # The user command: the first word that is not an option or the
        # value of --data-dir.
        $sub = ''
        for ($i = 1; $i -lt $words.Count; $i++) {
            if ($words[$i] -eq '--data-dir') { $i++; continue }
            if ($words[$i] -notlike '-*') { $sub = $words[$i]; break }
        }
        if ($userOptions.ContainsKey($sub)) { $candidates = $userOptions[$sub] }
    }

    $candidates | Where-Object { $_ -like "$wordToComplete*" } | ForEach-Object {
        [System.Management.Automation.CompletionResult]::new($_, $_, 'ParameterValue', $_)
    }
}
