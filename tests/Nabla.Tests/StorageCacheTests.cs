using Xunit;
using static Nabla.Tests.StorageCacheTests;

namespace Nabla.Tests;

/// <summary>Tests that change <see cref="StorageCache.LimitBytes"/> run alone; the rest only use lengths no other test allocates.</summary>
[CollectionDefinition(nameof(StorageCacheCollection), DisableParallelization = true)]
public class StorageCacheCollection { }

/// <summary>
/// Disposed tensors hand their large arrays to <see cref="StorageCache"/>. Each test uses its own odd element count
/// (above the 85,000-byte threshold), so tests running in parallel never take each other's arrays.
/// </summary>
[Collection(nameof(StorageCacheCollection))]
public class StorageCacheTests
{
    internal static float[] ArrayOf(Tensor t) => (float[])t.Storage.Data;

    [Fact]
    public void DisposedTensorArrayIsReusedAndTheOldTensorThrows()
    {
        const int n = 30_011;
        var t = Tensor.Randn(n);
        var array = ArrayOf(t);
        t.Dispose();
        Assert.True(t.Storage.IsDisposed);
        var ex = Assert.Throws<ObjectDisposedException>(() => t.ToArray<float>());
        Assert.Contains("30011 elements", ex.Message);

        var u = Tensor.Empty([n], DType.Float32);
        Assert.Same(array, ArrayOf(u));
        Assert.Throws<ObjectDisposedException>(() => t.Add(1));
    }

    [Fact]
    public void ZerosFromTheCacheAreZero()
    {
        const int n = 30_013;
        var t = Tensor.Full([n], 7f);
        var array = ArrayOf(t);
        t.Dispose();
        var z = Tensor.Zeros(n);
        Assert.Same(array, ArrayOf(z));
        Assert.All(z.ToArray<float>(), v => Assert.Equal(0f, v));
    }

    [Fact]
    public void DisposingTwiceReleasesOnce()
    {
        const int n = 30_017;
        var t = Tensor.Randn(n);
        var view = t.View(n);
        var expected = view.ToArray<float>();
        t.Dispose();
        t.Dispose();   // must not count as the view's release
        Assert.False(view.Storage.IsDisposed);
        var other = Tensor.Empty([n], DType.Float32);
        Assert.NotSame(ArrayOf(view), ArrayOf(other));
        Assert.Equal(expected, view.ToArray<float>());
    }

    [Fact]
    public void LiveViewKeepsTheStorageUntilItIsDisposedToo()
    {
        const int n = 30_019;
        var t = Tensor.Randn(2, n);
        var row = t.View(2 * n);
        var expected = row.ToArray<float>();
        var array = ArrayOf(t);
        t.Dispose();
        var other = Tensor.Empty([2, n], DType.Float32);
        Assert.NotSame(array, ArrayOf(other));
        other.Fill_(-1);
        Assert.Equal(expected, row.ToArray<float>());
        row.Dispose();
        Assert.True(t.Storage.IsDisposed);
        Assert.Same(array, ArrayOf(Tensor.Empty([2, n], DType.Float32)));
    }

    [Fact]
    public void TensorSavedByAutogradIsNotRecycled()
    {
        const int n = 30_029;
        var x = Tensor.Randn(4, n);
        var w = Tensor.Randn(n, 3).RequiresGrad_();
        var xValues = x.Clone();
        var loss = x.Matmul(w).Sum();
        var xArray = ArrayOf(x);
        x.Dispose();
        Assert.False(x.Storage.IsDisposed);
        var other = Tensor.Full([4, n], 5f);
        Assert.NotSame(xArray, ArrayOf(other));
        loss.Backward();
        // d(sum(x·w))/dw[i, j] = sum over rows of x[:, i]
        TensorAssert.Close("dL/dw", xValues.Sum([0]).Unsqueeze(1).Expand(n, 3), w.Grad!, 1e-4, 1e-4);
    }

    /// <summary>An index a backward rule reads (gather's) is kept too, though it is not a differentiable input.</summary>
    [Fact]
    public void IndexReadByABackwardRuleIsNotRecycled()
    {
        const int n = 12_007;   // int64: 96,056 bytes
        var g = new Generator(3);
        var x = Tensor.Randn([n], DType.Float32, g).RequiresGrad_();
        var index = Tensor.Randint(0, n, [n], generator: g);
        var counts = new float[n];
        foreach (var i in index.ToArray<long>()) counts[i]++;
        var y = x.Gather(0, index).Sum();
        index.Dispose();
        Assert.False(index.Storage.IsDisposed);
        Tensor.Zeros([n], DType.Int64).Dispose();
        y.Backward();
        Assert.Equal(counts, x.Grad!.ToArray<float>());
    }

    [Fact]
    public void MatmulOutputIsReusedWithCorrectResults()
    {
        var g = new Generator(5);
        var a = Tensor.Randn([97, 211], DType.Float32, g);
        var b = Tensor.Randn([211, 233], DType.Float32, g);
        var first = a.Matmul(b);
        var expected = first.ToArray<float>();
        var array = ArrayOf(first);
        first.Dispose();
        var second = a.Matmul(b);
        Assert.Same(array, ArrayOf(second));
        Assert.Equal(expected, second.ToArray<float>());
    }

    [Fact]
    public void DTypesDoNotShareArrays()
    {
        const int n = 30_031;
        var f = Tensor.Randn(n);
        var floats = f.Storage.Data;
        f.Dispose();
        var i = Tensor.Zeros([n], DType.Int32);
        Assert.NotSame(floats, i.Storage.Data);
        Assert.Same(floats, Tensor.Empty([n], DType.Float32).Storage.Data);
    }

    [Fact]
    public void SmallTensorsStayUsableAfterDispose()
    {
        var t = Tensor.Arange(100);
        t.Dispose();
        Assert.False(t.Storage.IsDisposed);
        Assert.Equal(4950.0, t.Sum().Item());
    }

    [Fact]
    public void LimitBoundsWhatIsKept()
    {
        long saved = StorageCache.LimitBytes;
        try
        {
            const int n = 30_037;
            StorageCache.LimitBytes = 0;
            Assert.Equal(0, StorageCache.CachedBytes);
            var t = Tensor.Randn(n);
            var array = ArrayOf(t);
            t.Dispose();
            Assert.True(t.Storage.IsDisposed);
            Assert.Equal(0, StorageCache.CachedBytes);
            Assert.NotSame(array, ArrayOf(Tensor.Empty([n], DType.Float32)));

            StorageCache.LimitBytes = 1L << 20;
            var u = Tensor.Randn(n);
            u.Dispose();
            Assert.Equal(4L * n, StorageCache.CachedBytes);
            StorageCache.Clear();
            Assert.Equal(0, StorageCache.CachedBytes);
            Assert.Throws<ArgumentOutOfRangeException>(() => StorageCache.LimitBytes = -1);

            // Room for two arrays: the third disposed drops the oldest, not itself.
            StorageCache.LimitBytes = 4L * (2 * n + 10);
            var (x1, x2, x3) = (Tensor.Randn(n), Tensor.Randn(n + 2), Tensor.Randn(n + 4));
            var (a1, a2, a3) = (ArrayOf(x1), ArrayOf(x2), ArrayOf(x3));
            x1.Dispose();
            x2.Dispose();
            x3.Dispose();
            Assert.Equal(4L * (2 * n + 6), StorageCache.CachedBytes);
            Assert.NotSame(a1, ArrayOf(Tensor.Empty([n], DType.Float32)));
            Assert.Same(a3, ArrayOf(Tensor.Empty([n + 4], DType.Float32)));
            Assert.Same(a2, ArrayOf(Tensor.Empty([n + 2], DType.Float32)));
            Assert.Equal(0, StorageCache.CachedBytes);
        }
        finally
        {
            StorageCache.LimitBytes = saved;
        }
    }
}

[Collection(nameof(StorageCacheCollection))]
public class DisposeScopeTests
{
    [Fact]
    public void ScopeDisposesWhatItCreatedAndNothingElse()
    {
        const int n = 30_041;
        var before = Tensor.Randn(n);
        float[] inner;
        Tensor kept;
        using (var scope = Tensor.NewDisposeScope())
        {
            Assert.Same(scope, DisposeScope.Current);
            var t = before.Mul(2);
            inner = ArrayOf(t);
            kept = t.Add(1).MoveToOuterDisposeScope();
            Tensor.Arange(10);   // small: never registered
            Assert.Equal(1, scope.Count);
        }
        Assert.Null(DisposeScope.Current);
        Assert.False(before.Storage.IsDisposed);
        Assert.False(kept.Storage.IsDisposed);
        Assert.Same(inner, ArrayOf(Tensor.Empty([n], DType.Float32)));
        Assert.Equal(before.Mul(2).Add(1).ToArray<float>(), kept.ToArray<float>());
    }

    [Fact]
    public void NestedScopesHandTensorsOutward()
    {
        const int n = 30_047;
        Tensor moved;
        using (var outer = Tensor.NewDisposeScope())
        {
            using (var inner = Tensor.NewDisposeScope())
                moved = Tensor.Randn(n).MoveToOuterDisposeScope();
            Assert.False(moved.Storage.IsDisposed);
            Assert.Equal(1, outer.Count);
        }
        Assert.True(moved.Storage.IsDisposed);
        Assert.Throws<ObjectDisposedException>(() => moved.Sum());
    }

    [Fact]
    public void ScopesMustEndInnermostFirst()
    {
        var outer = Tensor.NewDisposeScope();
        var inner = Tensor.NewDisposeScope();
        try
        {
            var ex = Assert.Throws<InvalidOperationException>(() => outer.Dispose());
            Assert.Contains("innermost first", ex.Message);
            Assert.Same(inner, DisposeScope.Current);
        }
        finally
        {
            inner.Dispose();
            outer.Dispose();
        }
        outer.Dispose();   // a second end is a no-op
        Assert.Null(DisposeScope.Current);
    }

    /// <summary>A scope ended on another thread (held across an await) disposes its tensors, closes, and says so.</summary>
    [Fact]
    public void ScopeEndedOnAnotherThreadClosesAndThrows()
    {
        const int n = 30_053;
        var outer = Tensor.NewDisposeScope();
        try
        {
            var inner = Tensor.NewDisposeScope();
            var t = Tensor.Randn(n);
            Exception? other = null;
            var thread = new Thread(() => { try { inner.Dispose(); } catch (Exception e) { other = e; } });
            thread.Start();
            thread.Join();
            Assert.IsType<InvalidOperationException>(other);
            Assert.Contains("thread", other!.Message);
            Assert.True(t.Storage.IsDisposed);
            // This thread's current scope was the closed one: new tensors go to the enclosing scope, not to a dead list.
            Assert.Same(outer, DisposeScope.Current);
            Tensor.Randn(n);
            Assert.Equal(1, outer.Count);
        }
        finally
        {
            outer.Dispose();
        }
        Assert.Null(DisposeScope.Current);
    }

    /// <summary>
    /// Activations made inside a step's scope are held by autograd until backward ran; then the scope recycles them.
    /// The gradient must be the one computed without any scope.
    /// </summary>
    [Fact]
    public void ActivationsAreRecycledOnlyAfterBackward()
    {
        const int n = 30_059;
        var g = new Generator(11);
        var w = Tensor.Randn([n], DType.Float32, g).RequiresGrad_();
        var x = Tensor.Randn([n], DType.Float32, g);
        x.Mul(w).Tanh().Sum().Backward();
        var expected = w.Grad!.Clone();
        w.Grad = null;

        Storage hStorage;
        using (Tensor.NewDisposeScope())
        {
            var h = x.Mul(w);
            hStorage = h.Storage;
            var loss = h.Tanh().Sum();
            h.Dispose();   // the graph still holds h: its array must not be reused before backward
            Assert.False(hStorage.IsDisposed);
            var other = Tensor.Full([n], 3f);
            Assert.NotSame(hStorage.Data, other.Storage.Data);
            loss.Backward();
            Assert.True(hStorage.IsDisposed);   // backward let go of it, and its only tensor was disposed
        }
        Assert.Equal(expected.ToArray<float>(), w.Grad!.ToArray<float>());
        Assert.False(w.Grad!.Storage.IsDisposed);
    }

    [Fact]
    public void ModuleMadeInsideAScopeKeepsItsParameters()
    {
        NN.Linear layer;
        using (Tensor.NewDisposeScope()) layer = new NN.Linear(200, 200);   // a 160,000-byte weight
        for (int i = 0; i < 4; i++) Tensor.Empty([200, 200], DType.Float32).Fill_(float.NaN);
        Assert.False(layer.Weight.Storage.IsDisposed);
        var y = layer.Forward(Tensor.Ones(1, 200));
        Assert.All(y.ToArray<float>(), v => Assert.True(float.IsFinite(v)));
    }

    /// <summary>A gradient that backward made and no caller has read goes back to the cache when ZeroGrad (or the next
    /// backward's sum) drops it; one the caller read is theirs from then on and stays valid.</summary>
    [Fact]
    public void UnreadGradientsAreRecycledAndReadOnesStayValid()
    {
        const int n = 30_071;   // 120,284 bytes
        var g = new Generator(31);
        var w = Tensor.Randn([n], DType.Float32, g).RequiresGrad_();
        var opt = new Optim.SGD([w], lr: 0.1);
        var x1 = Tensor.Randn([n], DType.Float32, g);
        var x2 = Tensor.Randn([n], DType.Float32, g);
        void Step(Tensor x, bool setToNone = true)
        {
            using var scope = Tensor.NewDisposeScope();
            opt.ZeroGrad(setToNone);
            w.Mul(x).Sum().Backward();   // dL/dw = x
            opt.Step();
        }
        Step(x1);
        var first = w.GradInternal!;
        Assert.False(first.Storage.IsDisposed);   // the step's scope does not take the gradient with it
        Step(x2);
        Assert.True(first.Storage.IsDisposed, "ZeroGrad did not hand the unread gradient's array back");
        Assert.Equal(x2.ToArray<float>(), w.GradInternal!.ToArray<float>());

        var held = w.Grad!;   // read: the caller's now
        Step(x1);
        Step(x2, setToNone: false);
        Assert.False(held.Storage.IsDisposed);
        Assert.Equal(x2.ToArray<float>(), held.ToArray<float>());
        Assert.Equal(x2.ToArray<float>(), w.Grad!.ToArray<float>());

        // Accumulating without ZeroGrad: the previous (unread) sum is recycled once the scope's tensors that share its
        // array are gone, and the new one is the total.
        Tensor partial;
        using (Tensor.NewDisposeScope())
        {
            opt.ZeroGrad();
            w.Mul(x1).Sum().Backward();
            partial = w.GradInternal!;
            w.Mul(x2).Sum().Backward();
        }
        Assert.True(partial.Storage.IsDisposed);
        TensorAssert.Close("accumulated gradient", x1.Add(x2), w.Grad!, 1e-6, 1e-6);
    }

    /// <summary>Backward passes on two threads into one shared parameter add up every gradient (leaf accumulation is
    /// locked), and none reads a previous sum the other thread's accumulation recycled.</summary>
    [Fact]
    public void ConcurrentBackwardPassesIntoASharedLeafAddUp()
    {
        const int n = 30_089, passes = 300;
        var w = Tensor.Zeros([n]).RequiresGrad_();
        var x = Tensor.Full([n], 0.5f);
        using var start = new Barrier(2);
        Exception? error = null;
        var threads = Enumerable.Range(0, 2).Select(_ => new Thread(() =>
        {
            try
            {
                start.SignalAndWait();
                for (int i = 0; i < passes; i++) w.Mul(x).Sum().Backward();   // dL/dw = x each time
            }
            catch (Exception e) { error = e; }
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        Assert.Null(error);
        // 600 additions of 0.5 are exact in float32, in any order.
        Assert.All(w.Grad!.ToArray<float>(), v => Assert.Equal(0.5f * 2 * passes, v));
    }

    /// <summary>Steady-state training steps allocate no new gradient buffers, in a scope or not (a plain backward disposes
    /// its own intermediate tensors): before gradients were recycled, every step allocated a weight-sized array per
    /// parameter (2 MB here) on the large-object heap.</summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void TrainingStepsDoNotAllocateNewGradients(bool scope)
    {
        Tensor.ManualSeed(33);
        var model = new NN.Linear(1031, 509);   // 2.1 MB of weights
        var opt = new Optim.Adam(model.Parameters(), lr: 1e-3);
        var x = Tensor.Randn(4, 1031);
        void Step()
        {
            using var s = scope ? Tensor.NewDisposeScope() : null;
            opt.ZeroGrad();
            model.Forward(x).Square().Mean().Backward();
            opt.Step();
        }
        for (int i = 0; i < 3; i++) Step();
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 5; i++) Step();
        long perStep = (GC.GetAllocatedBytesForCurrentThread() - before) / 5;
        Assert.True(perStep < 1_000_000, $"a training step allocated {perStep:N0} bytes");
    }

    /// <summary>
    /// Training with a scope around each step (parameters, gradients and Adam's state made or replaced inside it) must
    /// follow exactly the trajectory of training without scopes, for an MLP and for a CNN (convolution, batch norm,
    /// max pooling). The scoped run poisons every recycled array (NaN), so a kernel that relied on a fresh output being
    /// zero would show.
    /// </summary>
    [Theory]
    [InlineData("mlp")]
    [InlineData("cnn")]
    [InlineData("mlp-sgd-clip")]   // SGD with momentum and clipping: gradients replaced by the clip, then recycled
    public void TrainingStepsInScopesMatchTrainingWithoutThem(string kind)
    {
        double[] Train(bool scopes)
        {
            Tensor.ManualSeed(21);
            NN.Module model = kind != "cnn"
                ? new NN.Sequential(new NN.Linear(256, 256), new NN.ReLU(), new NN.Linear(256, 10))
                : new NN.Sequential(new NN.Conv2d(1, 16, 3, padding: 1), new NN.BatchNorm2d(16), new NN.ReLU(), new NN.MaxPool2d(2),
                    new NN.Flatten(), new NN.Linear(16 * 14 * 14, 10));
            Optim.Optimizer opt = kind == "mlp-sgd-clip" ? new Optim.SGD(model.Parameters(), lr: 0.05, momentum: 0.9) : new Optim.Adam(model.Parameters(), lr: 1e-2);
            var g = new Generator(22);
            var x = kind != "cnn" ? Tensor.Randn([96, 256], DType.Float32, g) : Tensor.Randn([8, 1, 28, 28], DType.Float32, g);
            var y = Tensor.Randint(0, 10, [x.Size(0)], generator: g);
            var losses = new double[12];
            for (int step = 0; step < losses.Length; step++)
            {
                using var scope = scopes ? Tensor.NewDisposeScope() : null;
                opt.ZeroGrad();
                var loss = Losses.CrossEntropy(model.Forward(x.Mul(1.0)), y);
                loss.Backward();
                if (kind == "mlp-sgd-clip") Optim.GradClip.ClipGradNorm(model.Parameters(), 0.5);
                opt.Step();
                losses[step] = loss.Item();
            }
            return losses;
        }
        var plain = Train(scopes: false);
        long hits = StorageCache.Hits;
        StorageCache.Poison = true;
        double[] scoped;
        try { scoped = Train(scopes: true); }
        finally { StorageCache.Poison = false; }
        Assert.True(StorageCache.Hits - hits >= 11, $"only {StorageCache.Hits - hits} allocations were served from the cache");
        Assert.Equal(plain, scoped);
        Assert.True(plain[^1] < plain[0]);
    }
}
