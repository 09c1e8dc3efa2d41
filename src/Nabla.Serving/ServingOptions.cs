namespace Nabla.Serving;

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

    /// <summary>Test hook: awaited inside the model's execution slot, before the graph runs.</summary>
    internal Func<ModelVersion, CancellationToken, Task>? BeforeExecute { get; set; }
}
