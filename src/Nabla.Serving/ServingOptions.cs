namespace Nabla.Serving;

/// <summary>How the set of served models changes (Triton's model control modes; EXPLICIT is NONE plus the load/unload API).</summary>
public enum ModelControlMode
{
    /// <summary>Load every model at start; the repository API loads and unloads.</summary>
    None,
    /// <summary>Load every model at start, then poll the folder every <see cref="ServingOptions.RepositoryPollInterval"/>; the load/unload API is refused.</summary>
    Poll,
}

/// <summary>Settings of <c>nabla serve</c> and of <see cref="NablaServing"/> in a host of your own.</summary>
public sealed class ServingOptions
{
    /// <summary>The model repository folder.</summary>
    public required string ModelRepository { get; set; }

    /// <summary>REST (HTTP/1.1) port on 127.0.0.1; 0 picks a free one.</summary>
    public int HttpPort { get; set; } = 8000;

    /// <summary>gRPC (HTTP/2 without TLS) port on 127.0.0.1; 0 picks a free one.</summary>
    public int GrpcPort { get; set; } = 8001;

    /// <summary>Largest REST body and gRPC message accepted (Triton's default, 64 MiB); larger ones get 413 / RESOURCE_EXHAUSTED.</summary>
    public long MaxRequestBytes { get; set; } = 64L << 20;

    /// <summary>How long shutdown waits for requests in flight before it gives up on them.</summary>
    public TimeSpan DrainTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>After SIGTERM, readiness is false at once but inference keeps being served this long (for load balancers to notice).</summary>
    public TimeSpan PreStopDelay { get; set; } = TimeSpan.Zero;

    /// <summary>When true the server is ready only if every model in the repository loaded.</summary>
    public bool StrictReadiness { get; set; }

    public string ServerName { get; set; } = "nabla";

    public ModelControlMode ModelControlMode { get; set; } = ModelControlMode.None;

    /// <summary>Time between two polls of the repository in <see cref="ModelControlMode.Poll"/> (Triton's default: 15 s).</summary>
    public TimeSpan RepositoryPollInterval { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>A key clients send as <c>X-API-Key</c> (gRPC metadata <c>x-api-key</c>); null: none.</summary>
    public string? ApiKey { get; set; }

    /// <summary>A token clients send as <c>Authorization: Bearer</c> (gRPC metadata <c>authorization</c>); null: none.</summary>
    public string? AuthToken { get; set; }

    /// <summary>
    /// With a key or token set, the repository endpoints (index, load, unload) always need it; with this flag every
    /// endpoint does except the health probes (<c>/v2/health/*</c>, <c>grpc.health.v1</c>), which orchestrators call bare.
    /// </summary>
    public bool AuthAll { get; set; }

    /// <summary>
    /// A PKCS#12 (.pfx/.p12) or PEM certificate; when set, both listeners speak TLS (HTTPS and gRPC over TLS) through
    /// Kestrel's standard certificate support. PEM needs <see cref="TlsKeyPath"/> unless the key is in the same file.
    /// </summary>
    public string? TlsCertificatePath { get; set; }
    public string? TlsCertificatePassword { get; set; }
    public string? TlsKeyPath { get; set; }

    /// <summary>Test hook: awaited inside the model's execution slot, before the graph runs.</summary>
    internal Func<ModelVersion, CancellationToken, Task>? BeforeExecute { get; set; }
}
