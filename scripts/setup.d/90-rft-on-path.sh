#!/usr/bin/env bash
# Puts `rft` on the PATH (both setup profiles run it last; re-run it after moving the checkout). Idempotent.
#   1. npm's global prefix, when it is writable (root, nvm, a nodejs.org tarball in your home): `npm link` links
#      the package there, so `$(npm prefix -g)/bin/rft` -> this checkout's dist/cli/rft.js. That folder is where
#      `npm` and `node` themselves usually live, so it is on the PATH of every new shell. --ignore-scripts: npm ci
#      has built dist/ already (and `npm link` would otherwise run `prepare` again).
#   2. otherwise (npm's prefix belongs to root and you are not root): a shim `~/.local/bin/rft` (exec node
#      <checkout>/dist/cli/rft.js), the XDG user bin folder that Debian's and Ubuntu's ~/.profile put on the PATH
#      of login shells once it exists. The step says so when that folder is not on the current PATH.
# Knobs: RFT_LINK=auto|npm|shim|0 [auto] (0 = leave the PATH alone; `node dist/cli/rft.js` still works),
#        RFT_BIN_DIR [~/.local/bin] (where the shim goes).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
MODE=${RFT_LINK:-auto}
say() { printf '== 90-rft-on-path: %s\n' "$*" >&2; }
die() {
  printf '90-rft-on-path: %s\n' "$*" >&2
  exit 1
}

[[ -f dist/cli/rft.js ]] || die "no dist/cli/rft.js: run \`npm run build\` (npm ci does) first"
case "$MODE" in
  0)
    say "RFT_LINK=0: not touching the PATH; run rft as \`node $ROOT/dist/cli/rft.js\`"
    exit 0
    ;;
  auto | npm | shim) ;;
  *) die "RFT_LINK=$MODE: use auto, npm, shim or 0" ;;
esac

PREFIX=$(npm prefix -g)
writable_prefix() {
  mkdir -p "$PREFIX/bin" "$PREFIX/lib/node_modules" 2>/dev/null && [[ -w $PREFIX/bin && -w $PREFIX/lib/node_modules ]]
}
if [[ $MODE == auto ]]; then
  if writable_prefix; then MODE=npm; else MODE=shim; fi
fi

if [[ $MODE == npm ]]; then
  writable_prefix || die "npm's global prefix $PREFIX is not writable (RFT_LINK=shim puts rft in ~/.local/bin)"
  say "npm link: $PREFIX/bin/rft -> $ROOT/dist/cli/rft.js"
  # npm link leaves the bin target's mode alone when a global link of the package already exists (it then
  # only repoints it), and tsc writes dist/ as 0644: without this, a fresh clone's `rft` is "Permission denied".
  chmod +x "$ROOT/dist/cli/rft.js"
  npm link --ignore-scripts --no-audit --no-fund >&2
  BIN=$PREFIX/bin
else
  BIN=${RFT_BIN_DIR:-$HOME/.local/bin}
  mkdir -p "$BIN"
  say "shim: $BIN/rft -> node $ROOT/dist/cli/rft.js"
  printf '#!/bin/sh\n# Written by rft-operator'"'"'s scripts/setup.d/90-rft-on-path.sh.\nexec node %q "$@"\n' \
    "$ROOT/dist/cli/rft.js" >"$BIN/rft.part"
  chmod 755 "$BIN/rft.part"
  mv "$BIN/rft.part" "$BIN/rft"
fi

"$BIN/rft" --version >/dev/null || die "$BIN/rft --version failed"
case ":$PATH:" in
  *":$BIN:"*) say "rft $("$BIN/rft" --version) is on the PATH ($BIN/rft)" ;;
  *) say "$BIN is not on this shell's PATH: add \`export PATH=\"$BIN:\$PATH\"\` to your shell's profile" ;;
esac
