#!/usr/bin/env bash
# Builds libapache2-mod-shield_<version>_<arch>.deb with plain dpkg-deb (no debhelper, no
# debian/ source tree), for the Apache httpd 2.4 of the machine it runs on.
#
#   packaging/debian/build-deb.sh [OUTDIR]
#
# OUTDIR defaults to ${CARGO_TARGET_DIR:-target}/debian. The last line printed is the path of
# the .deb. The module is built with scripts/build-module release (which honours
# CARGO_TARGET_DIR), which also builds shieldctl; SHIELD_SO=/path/to/mod_shield.so packages an
# already built module instead (and SHIELDCTL=/path/to/shieldctl an already built shieldctl).
#
# Needs: dpkg-deb, apxs (apache2-dev), strip (binutils), objdump, gzip.
#
# Package policy (see README.Debian in the package):
# - The module is NOT enabled on install. mod_shield refuses requests, so turning it on is the
#   administrator's decision: `a2enmod shield && systemctl restart apache2`. (Debian's
#   dh_apache2 modules enable themselves; a rate limiter appearing on every vhost at install
#   time, next to a possibly enabled mod_evasive, would be a surprise.)
# - On removal the module is disabled (apache2-maintscript-helper), so apache2 is never left
#   with a LoadModule line for a deleted file; purge forgets the enable/disable state.
# - The fail2ban filter and jail go to /usr/share/doc/<pkg>/examples/fail2ban/ only: no jail is
#   activated by installing the module.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"

pkg=libapache2-mod-shield
die() { echo "build-deb.sh: $*" >&2; exit 1; }

# --- version, architecture, API --------------------------------------------------------------
version=$(sed -n '/^\[package\]/,/^\[/{s/^version *= *"\([^"]*\)".*/\1/p}' Cargo.toml | head -n 1)
[ -n "$version" ] || die "no [package] version in Cargo.toml"
arch=$(dpkg --print-architecture)

# The module magic number (MMN) major: apache2-bin provides apache2-api-<MMN>, and a module
# built against one MMN must not be loaded by an httpd with another.
mmn=$(apxs -q HTTPD_MMN 2>/dev/null || true)
if ! [[ "$mmn" =~ ^[0-9]+$ ]]; then
  incdir=$(apxs -q INCLUDEDIR 2>/dev/null || echo /usr/include/apache2)
  mmn=$(sed -n 's/^#define MODULE_MAGIC_NUMBER_MAJOR \([0-9]*\).*/\1/p' "$incdir/ap_mmn.h" 2>/dev/null || true)
fi
[[ "$mmn" =~ ^[0-9]+$ ]] || die "cannot find the httpd MMN (apxs -q HTTPD_MMN / ap_mmn.h): install apache2-dev"

# --- inputs ----------------------------------------------------------------------------------
conf=conf/shield.conf
[ -f "$conf" ] || die "$conf is missing: it becomes /etc/apache2/mods-available/shield.conf"
for f in packaging/fail2ban/filter.d/shield.conf packaging/fail2ban/jail.d/shield.conf; do
  [ -f "$f" ] || die "$f is missing"
done

if [ -n "${SHIELD_SO:-}" ]; then
  so=$SHIELD_SO
else
  so=$(scripts/build-module release | tail -n 1)
fi
[ -f "$so" ] || die "module not found: $so"

if [ -n "${SHIELDCTL:-}" ]; then
  ctl=$SHIELDCTL
else
  [ -n "${SHIELD_SO:-}" ] && cargo build --release --bin shieldctl >&2
  ctl=${CARGO_TARGET_DIR:-$repo/target}/release/shieldctl
fi
[ -x "$ctl" ] || die "shieldctl not found: $ctl"

out=${1:-${CARGO_TARGET_DIR:-$repo/target}/debian}
mkdir -p "$out"
out=$(cd "$out" && pwd)

# --- staging tree ----------------------------------------------------------------------------
umask 022
stage=$(mktemp -d "${TMPDIR:-/tmp}/$pkg.XXXXXX")
chmod 0755 "$stage" # mktemp's 0700 would become the mode of / in the archive
trap 'rm -rf "$stage"' EXIT
doc=$stage/usr/share/doc/$pkg
install -d "$stage/DEBIAN" "$stage/usr/lib/apache2/modules" "$stage/usr/sbin" \
  "$stage/etc/apache2/mods-available" "$doc/examples/fail2ban/filter.d" \
  "$doc/examples/fail2ban/jail.d"

install -m 0644 "$so" "$stage/usr/lib/apache2/modules/mod_shield.so"
# Debug info and the static symbol table go; the dynamic symbols (shield_module) stay.
strip --strip-unneeded --remove-section=.comment --remove-section=.note \
  "$stage/usr/lib/apache2/modules/mod_shield.so"

# shieldctl, the administrator's tool on the store file; the store's directory is root's only
# (the parent opens the file as root before it drops privileges; the workers inherit the
# mapping and never open it).
install -m 0755 "$ctl" "$stage/usr/sbin/shieldctl"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$stage/usr/sbin/shieldctl"
install -d -m 0700 "$stage/var/lib/mod_shield"

# "# Conflicts:" is read by a2enmod (as for the MPMs): mod_evasive registers the same DOS*
# directive names, httpd hands each directive to every module that registers it, so with both
# loaded evasive rejects mod_shield's syntax (DOSBlockingPeriod 5 60 ...) or counts twice.
printf '%s\n' "# Conflicts: evasive" \
  "LoadModule shield_module /usr/lib/apache2/modules/mod_shield.so" \
  > "$stage/etc/apache2/mods-available/shield.load"
install -m 0644 "$conf" "$stage/etc/apache2/mods-available/shield.conf"

install -m 0644 packaging/fail2ban/filter.d/shield.conf "$doc/examples/fail2ban/filter.d/"
install -m 0644 packaging/fail2ban/jail.d/shield.conf "$doc/examples/fail2ban/jail.d/"
[ -f packaging/fail2ban/README.md ] && install -m 0644 packaging/fail2ban/README.md "$doc/examples/fail2ban/"
[ -f conf/cloudflare-remoteip.conf ] && install -m 0644 conf/cloudflare-remoteip.conf "$doc/examples/"
install -m 0644 packaging/debian/README.Debian "$doc/README.Debian"
[ -f README.md ] && install -m 0644 README.md "$doc/README.md"

cat > "$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: mod_shield

Files: *
Copyright: mod_shield contributors
License: Apache-2.0
 On Debian systems the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF

date_rfc2822=$(date -R -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")
maintainer="${DEBFULLNAME:-mod_shield maintainers} <${DEBEMAIL:-packaging@mod-shield.invalid}>"
{
  echo "$pkg ($version) unstable; urgency=medium"
  echo
  echo "  * Package built from the mod_shield source tree by packaging/debian/build-deb.sh."
  echo
  echo " -- $maintainer  $date_rfc2822"
} | gzip -9n > "$doc/changelog.Debian.gz"

# --- maintainer scripts ----------------------------------------------------------------------
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$stage/DEBIAN/"
printf '%s\n' /etc/apache2/mods-available/shield.conf /etc/apache2/mods-available/shield.load \
  > "$stage/DEBIAN/conffiles"

# --- dependencies ----------------------------------------------------------------------------
# libc6: the newest GLIBC_x.y symbol version the module references (what dpkg-shlibdeps would
# compute from the versioned symbols); libgcc-s1 when the Rust unwinder links libgcc_s.
glibc=$(objdump -T "$stage/usr/lib/apache2/modules/mod_shield.so" "$stage/usr/sbin/shieldctl" | grep -o 'GLIBC_[0-9][0-9.]*' \
  | sed 's/GLIBC_//' | sort -uV | tail -n 1)
depends="apache2-api-$mmn, libc6${glibc:+ (>= $glibc)}"
if objdump -p "$stage/usr/lib/apache2/modules/mod_shield.so" "$stage/usr/sbin/shieldctl" | grep -q 'NEEDED.*libgcc_s\.so\.1'; then
  depends="$depends, libgcc-s1"
fi

installed_size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<EOF
Package: $pkg
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: $depends
Suggests: fail2ban
Section: httpd
Priority: optional
Description: Apache 2.4 module that refuses abusive clients (mod_evasive successor)
 mod_shield counts requests per client, host and page in shared memory and
 refuses clients that exceed the configured rates with 429 and Retry-After,
 escalating the block length for repeat offenders. It reads mod_evasive's
 directives (DOSPageCount, DOSSiteCount, DOSBlockingPeriod, ...).
 .
 Blocks and generations are kept in /var/lib/mod_shield/shield.store across
 restarts and reboots; shieldctl lists, shows, blocks and unblocks clients.
 .
 The module is not enabled on install: run "a2enmod shield" and restart
 apache2. Example fail2ban filter and jail are in
 /usr/share/doc/$pkg/examples/fail2ban/.
EOF

(cd "$stage" && find . -path ./DEBIAN -prune -o -type f ! -path './etc/*' -print0 \
  | sort -z | xargs -0 md5sum | sed 's|  \./|  |') > "$stage/DEBIAN/md5sums"

deb=$out/${pkg}_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >&2
echo "$deb"
