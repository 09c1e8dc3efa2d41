namespace Nabla;

/// <summary>
/// Disposes, when it ends, every large tensor created on this thread while it was the innermost scope, as TorchSharp's
/// <c>NewDisposeScope()</c> does: a loop body wrapped in one hands its activations' buffers to <see cref="StorageCache"/>
/// for the next iteration instead of leaving them to the GC. Start one with <see cref="Tensor.NewDisposeScope"/>.
/// </summary>
/// <remarks>
/// <para>Only tensors over recyclable storages register (at least <see cref="StorageCache.MinBytes"/>); small tensors cost
/// nothing here and are freed by the GC. Disposal is safe for anything Nabla itself keeps: autograd holds what a
/// backward rule reads until backward ran; a gradient outlives the scope and is recycled only when the parameter drops it
/// unread (see <see cref="Tensor.Grad"/>); optimizer state, module parameters and buffers, graphs and traces are never
/// recycled. A graph run's outputs are ordinary new tensors: made inside a scope, they go with it. A tensor the caller wants after the scope must leave it through
/// <see cref="MoveToOuter"/> (or <see cref="Tensor.MoveToOuterDisposeScope"/>); one that is used after its storage
/// was recycled throws <see cref="ObjectDisposedException"/>, never reads another tensor's data.</para>
/// <para>A scope belongs to the thread that made it and must end there, innermost first: do not hold one across an
/// <c>await</c>.</para>
/// </remarks>
public sealed class DisposeScope : IDisposable
{
    [ThreadStatic] static DisposeScope? current;

    readonly DisposeScope? outer;
    readonly int threadId = Environment.CurrentManagedThreadId;
    List<Tensor>? tensors = new();

    DisposeScope(DisposeScope? outer) => this.outer = outer;

    // A scope ended from another thread is closed but may still be this thread's current one: skip it.
    static DisposeScope? Open(DisposeScope? s)
    {
        while (s is { tensors: null }) s = s.outer;
        return s;
    }

    internal static DisposeScope Begin() => current = new DisposeScope(Open(current));

    /// <summary>The innermost open scope of this thread, or null.</summary>
    public static DisposeScope? Current => current = Open(current);

    /// <summary>Tensors this scope will dispose.</summary>
    public int Count => tensors?.Count(t => ReferenceEquals(t.scope, this)) ?? 0;

    internal static void Register(Tensor t)
    {
        var s = current;
        if (s is null) return;
        if (s.tensors is null && (s = current = Open(s)) is null) return;
        t.scope = s;
        s.tensors!.Add(t);
    }

    /// <summary>Hands <paramref name="t"/> to the enclosing scope (or to no scope: then only the GC frees it) and returns it.</summary>
    public Tensor MoveToOuter(Tensor t)
    {
        ArgumentNullException.ThrowIfNull(t);
        if (!ReferenceEquals(t.scope, this)) return t;
        var target = Open(outer);
        t.scope = target;
        target?.tensors!.Add(t);
        return t;
    }

    /// <summary>
    /// Disposes the tensors still owned by this scope and makes the enclosing scope current again. Ending it on another
    /// thread than the one that started it (a scope held across an <c>await</c>) still disposes them and closes it, then
    /// throws <see cref="InvalidOperationException"/> to point at the bug.
    /// </summary>
    public void Dispose()
    {
        var list = tensors;
        if (list is null) return;
        bool otherThread = Environment.CurrentManagedThreadId != threadId;
        if (!otherThread)
        {
            if (!ReferenceEquals(Open(current), this))
                throw new InvalidOperationException("DisposeScope: scopes must end innermost first; an inner scope is still open");
            current = Open(outer);
        }
        tensors = null;
        foreach (var t in list)
            if (ReferenceEquals(t.scope, this))
            {
                t.scope = null;
                t.Dispose();
            }
        if (otherThread)
            throw new InvalidOperationException("DisposeScope: a scope must end on the thread that started it (was it held across an await?); its tensors were disposed and the scope is closed");
    }
}
