#!/bin/bash
# The authorizer's cost (docs/security.md): one broker with it off (A), one with it on
# and ALLOW ACLs for the bench's principal (B), `sluice bench compare` A B A B in one run.
# SLUICE: the binary (default target/debug/sluice); DIR: scratch space, removed after;
# ROUNDS: rounds per comparison (default 2).
set -e
B=${SLUICE:-target/debug/sluice}
d=${DIR:-target/tmp/authorizer-cost}
rm -rf $d; mkdir -p $d/a $d/b
printf '[auth]\nauthorizer = true\nsuper_users = ["User:admin", "User:ANONYMOUS"]\n' > $d/b-boot.toml
printf '[auth]\nauthorizer = true\nsuper_users = ["User:admin"]\n' > $d/b.toml
$B serve --listen 127.0.0.1:19501 --admin-listen 127.0.0.1:19511 --data-dir $d/a --cores 0 --no-pin > $d/a.out 2> $d/a.log &
A=$!
# B first with User:ANONYMOUS as a super user to add the ACLs, then without it.
$B serve --config $d/b-boot.toml --listen 127.0.0.1:19502 --admin-listen 127.0.0.1:19512 --data-dir $d/b --cores 0 --no-pin > $d/b.out 2> $d/b.log &
PB=$!
sleep 5
$B acl add --bootstrap 127.0.0.1:19502 --allow-principal User:ANONYMOUS --operation ALL --cluster
$B acl add --bootstrap 127.0.0.1:19502 --allow-principal User:ANONYMOUS --operation ALL --topic aclb --resource-pattern-type prefixed
$B acl add --bootstrap 127.0.0.1:19502 --allow-principal User:other --operation ALL --topic aclb
$B acl add --bootstrap 127.0.0.1:19502 --deny-principal User:other --operation WRITE --topic '*'
kill $PB; wait $PB || true
$B serve --config $d/b.toml --listen 127.0.0.1:19502 --admin-listen 127.0.0.1:19512 --data-dir $d/b --cores 0 --no-pin > $d/b.out 2> $d/b.log &
PB=$!
sleep 5
$B acl list --bootstrap 127.0.0.1:19502
echo "== produce 1 KiB"
$B bench compare produce --bootstrap 127.0.0.1:19501,127.0.0.1:19502 --rounds ${ROUNDS:-2} --cores 1 --no-pin \
   --topic aclb1 --partitions 4 --message-size 1024 --messages 100000
echo "== produce 100 B in 1 KiB batches (request-bound)"
$B bench compare produce --bootstrap 127.0.0.1:19501,127.0.0.1:19502 --rounds ${ROUNDS:-2} --cores 1 --no-pin \
   --topic aclb2 --partitions 4 --message-size 100 --batch-bytes 1024 --request-bytes 4096 --messages 100000
echo "== consume"
$B bench compare consume --bootstrap 127.0.0.1:19501,127.0.0.1:19502 --rounds ${ROUNDS:-2} --cores 1 --no-pin --topic aclb1
kill $A $PB; wait
rm -rf $d
