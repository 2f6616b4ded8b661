#!/usr/bin/env bash
# Builds the .deb packages of cyclerd (cyclerd, cyclerctl) and cyclerhub into OUTDIR:
#
#   scripts/package-deb.sh [--release] [OUTDIR]        (OUTDIR defaults to target/deb)
#
# Each package holds its binaries stripped (/usr/bin), its systemd unit (/lib/systemd/system),
# its sysusers.d and tmpfiles.d files (/usr/lib), a commented default configuration in /etc (a
# conffile: an upgrade keeps the lab's edits) and examples in /usr/share; its postinst creates the
# user and directories with systemd-sysusers and systemd-tmpfiles when they are there. Nothing is
# enabled or started: a lab's daemon drives power supplies, so its configuration comes first.
#
# Profiles: real releases use --release (a full optimised build, ~12 min on 2 cores). Without it
# the debug profile is packaged: what CI's `cargo test` already built in target/debug (only the
# two binaries are linked here), stripped all the same, so CI checks the packaging in seconds.
# Built with dpkg-deb (--root-owner-group: every file root's), no cargo-deb.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=debug
cargo_profile=(--profile dev)
if [ "${1:-}" = --release ]; then
  profile=release
  cargo_profile=(--release)
  shift
fi
out=${1:-target/deb}
target_dir=${CARGO_TARGET_DIR:-target}
bin="$target_dir/$profile"

cargo build "${cargo_profile[@]}" -p cyclerd-cli --bin cyclerd --bin cyclerctl -p cyclerhub --bin cyclerhub

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
arch=$(dpkg --print-architecture)
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# package NAME DESCRIPTION BINARIES...: the package's tree in $work/NAME, built into $out.
package() {
  local name=$1 description=$2
  shift 2
  local root="$work/$name"
  install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" \
    "$root/usr/lib/sysusers.d" "$root/usr/lib/tmpfiles.d" "$root/etc/$name" \
    "$root/usr/share/doc/$name"
  for b in "$@"; do
    install -m 0755 "$bin/$b" "$root/usr/bin/$b"
    strip --strip-unneeded "$root/usr/bin/$b"
  done
  install -m 0644 "deploy/systemd/$name.service" "$root/lib/systemd/system/$name.service"
  install -m 0644 "deploy/packaging/$name.sysusers" "$root/usr/lib/sysusers.d/$name.conf"
  install -m 0644 "deploy/packaging/$name.tmpfiles" "$root/usr/lib/tmpfiles.d/$name.conf"
  install -m 0644 README.md "$root/usr/share/doc/$name/README.md"
  cat > "$root/DEBIAN/control" <<EOF
Package: $name
Version: $version
Architecture: $arch
Maintainer: cyclerd developers <cyclerd@localhost>
Depends: libc6, libgcc-s1
Section: science
Priority: optional
Description: $description
EOF
  : > "$root/DEBIAN/conffiles"
  cat > "$root/DEBIAN/postinst" <<EOF
#!/bin/sh
set -e
if [ "\$1" = configure ]; then
  if command -v systemd-sysusers > /dev/null 2>&1; then
    systemd-sysusers $name.conf
  elif ! getent passwd $name > /dev/null; then
    adduser --system --group --home /var/lib/$name --no-create-home $name
  fi
  if command -v systemd-tmpfiles > /dev/null 2>&1; then
    systemd-tmpfiles --create $name.conf
  fi
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
  fi
fi
EOF
  cat > "$root/DEBIAN/prerm" <<EOF
#!/bin/sh
set -e
# On removal only: an upgrade restarts the unit itself (systemctl restart $name).
if [ "\$1" = remove ] && [ -d /run/systemd/system ]; then
  systemctl stop $name.service || true
fi
EOF
  cat > "$root/DEBIAN/postrm" <<EOF
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
fi
EOF
  chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
}

package cyclerd "battery cycler acquisition daemon
 cyclerd drives and follows the lab's cyclers, power supplies and chambers, keeps every sample
 in a local outbox and uploads it to a cyclerhub; cyclerctl is its control client." cyclerd cyclerctl
install -m 0644 deploy/packaging/cyclerd.toml "$work/cyclerd/etc/cyclerd/cyclerd.toml"
echo /etc/cyclerd/cyclerd.toml >> "$work/cyclerd/DEBIAN/conffiles"
install -d "$work/cyclerd/usr/share/doc/cyclerd/examples/protocols"
install -m 0644 deploy/lab-*.toml "$work/cyclerd/usr/share/doc/cyclerd/examples/"
install -m 0644 deploy/protocols/*.yaml "$work/cyclerd/usr/share/doc/cyclerd/examples/protocols/"

package cyclerhub "lab data hub for cyclerd
 cyclerhub receives the samples of every cyclerd of a lab (SQLite or PostgreSQL) and serves
 them over gRPC, an HTTP API and a web app." cyclerhub
install -m 0640 deploy/packaging/cyclerhub.env "$work/cyclerhub/etc/cyclerhub/cyclerhub.env"
echo /etc/cyclerhub/cyclerhub.env >> "$work/cyclerhub/DEBIAN/conffiles"
install -D -m 0644 deploy/systemd/cyclerhub-postgresql.conf \
  "$work/cyclerhub/usr/share/cyclerhub/systemd/postgresql.conf"

for name in cyclerd cyclerhub; do
  dpkg-deb --build --root-owner-group -Zxz "$work/$name" "$out/${name}_${version}_${arch}.deb" > /dev/null
  echo "$out/${name}_${version}_${arch}.deb"
done
