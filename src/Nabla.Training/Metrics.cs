namespace Nabla.Training;

/// <summary>A metric accumulated over batches and computed once per epoch (like torchmetrics).</summary>
public abstract class Metric
{
    public abstract void Update(Tensor predictions, Tensor target);
    public abstract double Compute();
    public abstract void Reset();

    protected static long[] Labels(Tensor predictions)
    {
        // Logits or probabilities [N, C] → argmax; class indices [N] pass through.
        var p = predictions.Dim >= 2 ? predictions.Argmax(1) : predictions.To(DType.Int64);
        return p.ToArray<long>();
    }

    protected static long[] Targets(Tensor target) => target.To(DType.Int64).ToArray<long>();
}

public sealed class Accuracy : Metric
{
    long correct, total;

    public override void Update(Tensor predictions, Tensor target)
    {
        var p = Labels(predictions);
        var t = Targets(target);
        if (p.Length != t.Length) throw new ShapeMismatchException($"accuracy: {p.Length} predictions for {t.Length} targets");
        for (int i = 0; i < p.Length; i++) if (p[i] == t[i]) correct++;
        total += p.Length;
    }

    public override double Compute() => total == 0 ? 0 : (double)correct / total;
    public override void Reset() { correct = 0; total = 0; }
}

/// <summary>Fraction of samples whose target is among the k highest scores.</summary>
public sealed class TopKAccuracy : Metric
{
    readonly int k;
    long correct, total;
    public TopKAccuracy(int k) => this.k = k;

    public override void Update(Tensor predictions, Tensor target)
    {
        var top = predictions.Topk(Math.Min(k, predictions.Size(1)), 1).indices.ToArray<long>();
        var t = Targets(target);
        int kk = top.Length / t.Length;
        for (int i = 0; i < t.Length; i++)
            for (int j = 0; j < kk; j++)
                if (top[i * kk + j] == t[i]) { correct++; break; }
        total += t.Length;
    }

    public override double Compute() => total == 0 ? 0 : (double)correct / total;
    public override void Reset() { correct = 0; total = 0; }
}

/// <summary>The C×C confusion matrix (rows: true class, columns: predicted class).</summary>
public sealed class ConfusionMatrix : Metric
{
    public int NumClasses { get; }
    public long[,] Counts { get; }

    public ConfusionMatrix(int numClasses)
    {
        NumClasses = numClasses;
        Counts = new long[numClasses, numClasses];
    }

    public override void Update(Tensor predictions, Tensor target)
    {
        var p = Labels(predictions);
        var t = Targets(target);
        for (int i = 0; i < t.Length; i++)
        {
            if (t[i] < 0 || t[i] >= NumClasses || p[i] < 0 || p[i] >= NumClasses)
                throw new IndexOutOfBoundsException($"confusion_matrix: class {Math.Max(t[i], p[i])} is outside [0, {NumClasses})");
            Counts[t[i], p[i]]++;
        }
    }

    /// <summary>Overall accuracy (the trace over the total).</summary>
    public override double Compute()
    {
        long diag = 0, all = 0;
        for (int i = 0; i < NumClasses; i++)
            for (int j = 0; j < NumClasses; j++) { all += Counts[i, j]; if (i == j) diag += Counts[i, j]; }
        return all == 0 ? 0 : (double)diag / all;
    }

    public override void Reset() => Array.Clear(Counts);

    public (double precision, double recall, double f1) Class(int c)
    {
        long tp = Counts[c, c], fp = 0, fn = 0;
        for (int i = 0; i < NumClasses; i++)
        {
            if (i == c) continue;
            fp += Counts[i, c];
            fn += Counts[c, i];
        }
        double p = tp + fp == 0 ? 0 : (double)tp / (tp + fp);
        double r = tp + fn == 0 ? 0 : (double)tp / (tp + fn);
        return (p, r, p + r == 0 ? 0 : 2 * p * r / (p + r));
    }
}

public enum PrfKind { Precision, Recall, F1 }

/// <summary>Macro-averaged precision, recall or F1 over the classes.</summary>
public sealed class MacroPrf : Metric
{
    readonly ConfusionMatrix cm;
    readonly PrfKind kind;

    public MacroPrf(int numClasses, PrfKind kind)
    {
        cm = new ConfusionMatrix(numClasses);
        this.kind = kind;
    }

    public override void Update(Tensor predictions, Tensor target) => cm.Update(predictions, target);

    public override double Compute()
    {
        double s = 0;
        for (int c = 0; c < cm.NumClasses; c++)
        {
            var (p, r, f) = cm.Class(c);
            s += kind switch { PrfKind.Precision => p, PrfKind.Recall => r, _ => f };
        }
        return s / cm.NumClasses;
    }

    public override void Reset() => cm.Reset();
}

/// <summary>The mean over all elements of a per-element error of predictions against targets.</summary>
public abstract class MeanElementError(string name) : Metric
{
    double sum;
    long n;

    protected abstract double Error(double difference);

    public override void Update(Tensor predictions, Tensor target)
    {
        var p = predictions.ToDoubleArray();
        var t = target.ToDoubleArray();
        if (p.Length != t.Length) throw new ShapeMismatchException($"{name}: {p.Length} predictions for {t.Length} targets");
        for (int i = 0; i < p.Length; i++) sum += Error(p[i] - t[i]);
        n += p.Length;
    }

    public override double Compute() => n == 0 ? 0 : sum / n;
    public override void Reset() { sum = 0; n = 0; }
}

public sealed class MeanAbsoluteError() : MeanElementError("mae")
{
    protected override double Error(double d) => Math.Abs(d);
}

public sealed class MeanSquaredError() : MeanElementError("mse")
{
    protected override double Error(double d) => d * d;
}
