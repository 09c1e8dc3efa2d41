namespace Nabla.Serving;

/// <summary>
/// Liveness and readiness of the server. Ready = every model has been tried (loaded or recorded as failed) and the
/// server is not shutting down; with <see cref="ServingOptions.StrictReadiness"/> every model must also be loaded.
/// </summary>
public sealed class ServerState
{
    readonly Lock gate = new();
    TaskCompletionSource changed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    volatile bool loaded, stopping, draining;
    volatile string? loadFailure;

    /// <summary>Startup loading finished.</summary>
    public bool Loaded => loaded;
    /// <summary>Shutdown began: readiness is false, inference still runs (the pre-stop delay).</summary>
    public bool Stopping => stopping;
    /// <summary>Shutdown is draining: new inference calls are refused with 503 / UNAVAILABLE.</summary>
    public bool Draining => draining;
    public bool Ready => loaded && !stopping && loadFailure is null;

    public string NotReadyReason =>
        stopping ? "the server is shutting down" : !loaded ? "models are still loading" : loadFailure ?? "";

    /// <summary>Completes at the next change of readiness (for gRPC health Watch).</summary>
    public Task NextChange
    {
        get { lock (gate) return changed.Task; }
    }

    internal void MarkLoaded(string? failure)
    {
        loadFailure = failure;
        loaded = true;
        Signal();
    }

    internal void MarkStopping()
    {
        stopping = true;
        Signal();
    }

    internal void MarkDraining()
    {
        stopping = true;
        draining = true;
        Signal();
    }

    void Signal()
    {
        TaskCompletionSource old;
        lock (gate)
        {
            old = changed;
            changed = new(TaskCreationOptions.RunContinuationsAsynchronously);
        }
        old.TrySetResult();
    }
}
