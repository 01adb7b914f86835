# elvish completion for skiffd.
#
# Install: skiffd completions elvish > ~/.config/elvish/lib/skiffd.elv,
# then add `use skiffd` to rc.elv. Written by hand; a test in
# server/src/cli.rs checks that it names every command and option.

use str

var serve-options = [
  --data-dir --listen --unix --udp-time --udp-echo --raw-echo --ftp
  --ftp-passive --ftp-advertise --ftp-require-tls --ftp-hash-uploads
  --ftp-passive-timeout --tls-listen --tls-cert --tls-key --tls-handshake-timeout --max-body --idle-timeout --max-conns --max-conns-per-ip
  --out-high-water --out-total --backlog --exec-per-conn --exec-max
  --exec-max-time --exec-max-output --shutdown-grace --help
]

var user-options = [
  &''=[add del mod passwd list help --data-dir --help]
  &add=[--data-dir --quota --exec --password-stdin --help]
  &del=[--data-dir --purge --help]
  &mod=[--data-dir --quota --exec --no-exec --help]
  &passwd=[--data-dir --password-stdin --help]
  &list=[--data-dir --help]
  &help=[add del mod passwd list]
]

set edit:completion:arg-completer[skiffd] = {|@words|
  # $words ends with the word being completed.
  var command = $words[1]
  if (== (count $words) 2) {
    put serve user completions man help --version $@serve-options
  } elif (or (eq $command serve) (str:has-prefix $command -)) {
    put $@serve-options
  } elif (eq $command completions) {
    put bash zsh fish elvish powershell
  } elif (eq $command help) {
    put serve user completions man
  } elif (eq $command man) {
    put --help
  } elif (eq $command user) {
    # The user command: the first word that is not an option or the
    # value of --data-dir.
    var sub = ''
    var skip = $false
    for w $words[2..-1] {
      if $skip {
        set skip = $false
      } elif (eq $w --data-dir) {
        set skip = $true
      } elif (not (str:has-prefix $w -)) {
        set sub = $w
        break
      }
    }
    if (has-key $user-options $sub) {
      all $user-options[$sub]
    }
  }
}
