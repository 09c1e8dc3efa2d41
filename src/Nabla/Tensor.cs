using System.Runtime.CompilerServices;

namespace Nabla;

/// <summary>
/// An n-dimensional array: a <see cref="Storage"/> plus a layout (shape, strides in elements, offset).
/// Views share storage and copy nothing. Tensors are ordinary managed objects: the GC frees them. Disposing a tensor is
/// optional, as in TorchSharp: it lets a large buffer be reused at once (see <see cref="Dispose"/>).
/// </summary>
public sealed partial class Tensor : IDisposable
{
    internal readonly Storage storage;
    internal readonly int[] shape;
    internal readonly int[] strides;
    internal readonly int offset;

    bool requiresGrad;
    int disposed;
    internal Autograd.Node? gradFn;

    internal Tensor(Storage storage, int[] shape, int[] strides, int offset)
    {
        this.storage = storage;
        this.shape = shape;
        this.strides = strides;
        this.offset = offset;
        if (storage.Recyclable)
        {
            storage.AddOwner();
            DisposeScope.Register(this);
        }
    }

    /// <summary>The dispose scope that will dispose this tensor, if any.</summary>
    internal DisposeScope? scope;

    /// <summary>
    /// Starts a scope that disposes, when it ends, every large tensor this thread creates inside it (see
    /// <see cref="DisposeScope"/>): <c>using (Tensor.NewDisposeScope()) { ... }</c>, as in TorchSharp.
    /// </summary>
    public static DisposeScope NewDisposeScope() => DisposeScope.Begin();

    /// <summary>Moves this tensor out of the scope that would dispose it, to the enclosing one; returns this tensor.</summary>
    public Tensor MoveToOuterDisposeScope() => scope?.MoveToOuter(this) ?? this;

    /// <summary>Takes this tensor out of every dispose scope: only the GC (or an explicit <see cref="Dispose"/>) frees it.</summary>
    public Tensor DetachFromDisposeScope()
    {
        scope = null;
        return this;
    }

    /// <summary>
    /// Gives up this tensor's claim on its storage. When every tensor over a large storage (views included) was
    /// disposed, and no autograd graph or trace saved it, its array is reused by the next allocation of the same dtype
    /// and length (<see cref="StorageCache"/>), as libtorch's and ONNX Runtime's allocators reuse freed blocks; until
    /// then nothing changes. Using a tensor whose storage was recycled throws <see cref="ObjectDisposedException"/>.
    /// Disposing twice does nothing. Tensors that are not disposed are freed by the GC.
    /// </summary>
    public void Dispose()
    {
        if (storage.Recyclable && Interlocked.Exchange(ref disposed, 1) == 0) storage.ReleaseOwner();
    }

    internal Tensor(Storage storage, int[] shape) : this(storage, shape, ContiguousStrides(shape), 0) { }

    public Storage Storage => storage;
    public DType DType => storage.DType;
    public Device Device => storage.Device;

    /// <summary>The sizes of each dimension (a copy).</summary>
    public int[] Shape => (int[])shape.Clone();

    /// <summary>The strides of each dimension in elements (a copy).</summary>
    public int[] Strides => (int[])strides.Clone();

    public int Offset => offset;

    /// <summary>Number of dimensions.</summary>
    public int Dim => shape.Length;

    public int NumElements => ShapeUtil.Numel(shape);

    /// <summary>Size of dimension <paramref name="dim"/>; negative dims count from the end.</summary>
    public int Size(int dim) => shape[NormalizeDim(dim, shape.Length, "size")];

    /// <summary>The gradient accumulated by <see cref="Backward"/> for a leaf that requires grad.</summary>
    /// <remarks>
    /// A gradient that backward made and that nobody has read through this property yet is private to the tensor: when it
    /// is replaced or cleared (<see cref="Optim.Optimizer.ZeroGrad"/>, the next backward's sum) it is disposed, and its
    /// buffer goes back to <see cref="StorageCache"/> once nothing else holds it (a plain backward disposes its own
    /// intermediate tensors, so with or without a dispose scope), so the next step's gradient reuses it
    /// (PyTorch's caching allocator does the same for a gradient set to None). Without this, every training step put
    /// fresh weight-sized gradients on the large-object heap: a 784-512-256-10 MLP's Adam step at batch 64 allocated
    /// 2.3 MB, ran a full collection every four steps and took 7–8 ms in a console app with default GC settings
    /// (bench/README.md, "Session 14"). Reading the property, or setting it, makes the gradient the caller's: it is then
    /// never recycled, and a reference kept across <see cref="Optim.Optimizer.ZeroGrad"/> stays valid. Like the rest of a
    /// tensor, not safe to read on one thread while another thread's backward or ZeroGrad replaces it.
    /// </remarks>
    public Tensor? Grad
    {
        get
        {
            var g = grad;
            // (Exchanged, so that two threads reading at once unpin once.)
            if (g is not null && Interlocked.Exchange(ref gradPrivate, 0) == 1)
            {
                g.storage.Keep();   // handed out: outlives any dispose scope, never recycled
                g.storage.Unpin();
            }
            return g;
        }
        set
        {
            value?.storage.Keep();   // the gradient outlives any dispose scope of the step that made it
            ReleaseGrad();
            grad = value;
        }
    }

    Tensor? grad;
    /// <summary>1 when <see cref="grad"/> was made by backward or an optimizer and not handed out (see <see cref="Grad"/>):
    /// this tensor then holds one owner of its storage and one pin; else 0.</summary>
    int gradPrivate;

    /// <summary>The gradient for the library's own use (optimizers, autograd, clipping): reading it keeps it private.</summary>
    internal Tensor? GradInternal => grad;

    /// <summary>Sets a gradient that only this tensor holds (a new tensor that no caller has seen), replacing the current
    /// one as <see cref="Grad"/>'s setter does.</summary>
    internal void SetPrivateGrad(Tensor g)
    {
        if (ReferenceEquals(g, grad)) return;
        g.storage.Pin();   // outlives the dispose scope of the step that made it, until released
        ReleaseGrad();
        grad = g;
        gradPrivate = 1;
    }

    /// <summary>Drops the current gradient; a private one is disposed and unpinned, so that its buffer is recycled once
    /// no other tensor or holder has it.</summary>
    void ReleaseGrad()
    {
        var old = grad;
        grad = null;
        if (Interlocked.Exchange(ref gradPrivate, 0) != 1 || old is null) return;
        old.Dispose();
        old.storage.Unpin();
    }

    /// <summary>The name of the op that produced this tensor in the autograd graph, or null for a leaf.</summary>
    public string? GradFn => gradFn?.Op;

    public bool IsLeaf => gradFn is null;

    public bool RequiresGrad
    {
        get => requiresGrad;
        set
        {
            if (value && !DType.IsFloatingPoint())
                throw new AutogradException($"requires_grad: only floating point tensors can require gradients, got {DType.TorchName()}");
            if (!value && gradFn is not null)
                throw new AutogradException("requires_grad: cannot turn off gradients of a non-leaf tensor; use Detach()");
            requiresGrad = value;
        }
    }

    /// <summary>Sets <see cref="RequiresGrad"/> and returns this tensor, like PyTorch's <c>requires_grad_()</c>.</summary>
    public Tensor RequiresGrad_(bool value = true)
    {
        RequiresGrad = value;
        return this;
    }

    internal void SetGradFn(Autograd.Node node)
    {
        gradFn = node;
        requiresGrad = true;
    }

    public bool IsContiguous
    {
        get
        {
            // NOTE: a tensor with no elements is contiguous whatever its strides, as in PyTorch.
            foreach (var d in shape) if (d == 0) return true;
            int expected = 1;
            for (int i = shape.Length - 1; i >= 0; i--)
            {
                if (shape[i] == 1) continue;
                if (strides[i] != expected) return false;
                expected *= shape[i];
            }
            return true;
        }
    }

    internal static int[] ContiguousStrides(int[] shape)
    {
        var s = new int[shape.Length];
        int acc = 1;
        for (int i = shape.Length - 1; i >= 0; i--)
        {
            s[i] = acc;
            acc *= Math.Max(shape[i], 1);
        }
        return s;
    }

    internal static int NormalizeDim(int dim, int rank, string op)
    {
        int r = Math.Max(rank, 1);
        if (dim < -r || dim >= r)
            throw new DimensionOutOfRangeException($"{op}: dimension {dim} out of range for a tensor of rank {rank} (expected in [{-r}, {r - 1}])");
        return dim < 0 ? dim + r : dim;
    }

    /// <summary>A new tensor sharing storage and layout but cut from the autograd graph.</summary>
    public Tensor Detach() => new(storage, shape, strides, offset);

    /// <summary>
    /// The elements in row-major order as a fresh array of <typeparamref name="T"/>, which must match the dtype.
    /// </summary>
    public T[] ToArray<T>()
    {
        if (DTypes.Of<T>() != DType)
            throw new DTypeException($"ToArray: tensor has dtype {DType.TorchName()}, asked for {typeof(T).Name}");
        var dst = new T[NumElements];
        Cpu.CopyStrided(storage.As<T>(), offset, shape, strides, dst);
        return dst;
    }

    /// <summary>The single value of a one-element tensor, converted to double.</summary>
    public double Item()
    {
        if (NumElements != 1)
            throw new ShapeMismatchException($"item: only one-element tensors can be converted to a scalar, got shape {ShapeUtil.Format(shape)}");
        return Cpu.ReadAsDouble(storage, offset);
    }

    public float ItemFloat() => (float)Item();

    /// <summary>
    /// The storage array when this tensor is contiguous and covers it from the start; otherwise a contiguous copy's.
    /// Read-only use by kernels.
    /// </summary>
    internal T[] ContiguousData<T>()
    {
        if (offset == 0 && IsContiguous && storage.Length == NumElements) return storage.As<T>();
        var dst = new T[NumElements];
        Cpu.CopyStrided(storage.As<T>(), offset, shape, strides, dst);
        return dst;
    }

    /// <summary>A span over the elements when the tensor is contiguous (any offset).</summary>
    internal Span<T> ContiguousSpan<T>()
    {
        if (!IsContiguous) throw new InvalidOperationException("tensor is not contiguous");
        return storage.As<T>().AsSpan(offset, NumElements);
    }

    internal void BumpVersion() => storage.Version++;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Tensor Empty(int[] shape, DType dtype) => new(Storage.Allocate(dtype, ShapeUtil.Numel(shape), uninitialized: true), shape);

    /// <summary>A zero-filled contiguous tensor.</summary>
    internal static Tensor ZerosRaw(int[] shape, DType dtype) => new(Storage.Allocate(dtype, ShapeUtil.Numel(shape)), shape);
}

internal static class ShapeUtil
{
    public static int Numel(ReadOnlySpan<int> shape)
    {
        long n = 1;
        foreach (var d in shape)
        {
            if (d < 0) throw new ShapeMismatchException($"negative dimension {d} in shape [{string.Join(", ", shape.ToArray())}]");
            n *= d;
        }
        if (n > int.MaxValue) throw new ShapeMismatchException($"shape [{string.Join(", ", shape.ToArray())}] has more than 2^31-1 elements");
        return (int)n;
    }

    public static string Format(ReadOnlySpan<int> shape) => "[" + string.Join(", ", shape.ToArray()) + "]";

    public static bool Equal(ReadOnlySpan<int> a, ReadOnlySpan<int> b) => a.SequenceEqual(b);

    /// <summary>NumPy broadcasting of two shapes; throws naming the op, both shapes and the dimension.</summary>
    public static int[] Broadcast(string op, int[] a, int[] b)
    {
        int n = Math.Max(a.Length, b.Length);
        var r = new int[n];
        for (int i = 0; i < n; i++)
        {
            int da = i - (n - a.Length) >= 0 ? a[i - (n - a.Length)] : 1;
            int db = i - (n - b.Length) >= 0 ? b[i - (n - b.Length)] : 1;
            if (da != db && da != 1 && db != 1)
                throw new ShapeMismatchException($"{op}: shapes {Format(a)} and {Format(b)} cannot be broadcast: dimension {i} has sizes {da} and {db}");
            r[i] = da == 1 ? db : da;
        }
        return r;
    }

    /// <summary>Strides of a tensor viewed at a broadcast shape: 0 where the tensor's size is 1 or missing.</summary>
    public static int[] BroadcastStrides(Tensor t, int[] target)
    {
        var s = new int[target.Length];
        int lead = target.Length - t.shape.Length;
        for (int i = 0; i < t.shape.Length; i++)
            s[lead + i] = t.shape[i] == 1 && target[lead + i] != 1 ? 0 : t.strides[i];
        return s;
    }
}
