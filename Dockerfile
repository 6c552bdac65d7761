# signoff: a static (musl) binary on distroless/static, running as non-root (65532).
#   docker build -t ghcr.io/signoff-dev/signoff:0.1.0 .
# The chart's values image.repository/image.tag point at this image.

FROM rust:1.95-alpine AS build
# ring (rustls' crypto) compiles C: musl-dev provides the headers and static libc.
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY testenv ./testenv
RUN cargo build --release --locked --bin signoff --bin kubectl-signoff \
 && mkdir /out \
 && cp target/release/signoff target/release/kubectl-signoff /out/

# distroless/static: CA certificates (for HTTPS notification sinks), tzdata, no shell.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/signoff /usr/local/bin/signoff
COPY --from=build /out/kubectl-signoff /usr/local/bin/kubectl-signoff
USER 65532:65532
EXPOSE 9443 8080
ENTRYPOINT ["/usr/local/bin/signoff"]
CMD ["run"]
