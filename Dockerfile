# The agentbus server image, for those who build with Docker or in their own CI.
# `agentbus image build` makes the same layout without Docker: the binary at
# /usr/local/bin/agentbus on an empty base, exactly the shared libraries it loads, CA
# certificates, user 10001, port 8080, `agentbus healthcheck` as the health check.
#
#   docker build -t agentbus .
#   docker run --rm -p 127.0.0.1:8080:8080 agentbus serve --data-dir /tmp/agentbus --host 0.0.0.0

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p cli
# The root file system: the binary, the loader and libraries it needs (as ldd resolves
# them), the CA bundle, and a passwd naming the non-root user.
RUN set -eu; \
    mkdir -p /out/usr/local/bin /out/etc/ssl/certs /out/home/agentbus /out/tmp; \
    cp target/release/agentbus /out/usr/local/bin/agentbus; \
    for lib in $(ldd target/release/agentbus | grep -o '/[^ ]*'); do \
        cp -L --parents "$lib" /out/; \
    done; \
    cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/; \
    printf 'root:x:0:0:root:/root:/sbin/nologin\nagentbus:x:10001:10001:agentbus:/home/agentbus:/sbin/nologin\n' > /out/etc/passwd; \
    printf 'root:x:0:\nagentbus:x:10001:\n' > /out/etc/group; \
    chown 10001:10001 /out/home/agentbus; chmod 750 /out/home/agentbus; chmod 1777 /out/tmp

FROM scratch
COPY --from=build /out/ /
USER 10001:10001
ENV PATH=/usr/local/bin:/usr/bin:/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    HOME=/home/agentbus
WORKDIR /home/agentbus
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/agentbus", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/agentbus"]
CMD ["serve"]
