using Nabla.Graph;
using static Nabla.Interop.Onnx.Ops.OpUtil;

namespace Nabla.Interop.Onnx.Ops;

/// <summary>Activations and the softmax family (with the opset &lt; 13 "flatten to 2-D at axis" semantics).</summary>
internal static class ActivationOps
{
    public static void Register(OnnxOps r)
    {
        r.Add("Relu", c => One(c.Input(0).DType == DType.Float32 ? c.Input(0).Relu() : Map(c.Input(0), x => Math.Max(x, 0))));
        r.Add("Sigmoid", c => One(c.Input(0).DType == DType.Float32 ? c.Input(0).Sigmoid() : Map(c.Input(0), Sigmoid)));
        r.Add("Tanh", c => One(c.Input(0).DType == DType.Float32 ? c.Input(0).Tanh() : Map(c.Input(0), Math.Tanh)));
        r.Add("LeakyRelu", c =>
        {
            double a = c.Node.GetFloat("alpha", 0.01);
            return One(Map(c.Input(0), x => x >= 0 ? x : a * x));
        });
        r.Add("Elu", c =>
        {
            double a = c.Node.GetFloat("alpha", 1.0);
            return One(Map(c.Input(0), x => x >= 0 ? x : a * (Math.Exp(x) - 1)));
        });
        r.Add("Celu", c =>
        {
            double a = c.Node.GetFloat("alpha", 1.0);
            return One(Map(c.Input(0), x => Math.Max(0, x) + Math.Min(0, a * (Math.Exp(x / a) - 1))));
        });
        r.Add("Selu", c =>
        {
            double a = c.Node.GetFloat("alpha", 1.67326319217681884765625), g = c.Node.GetFloat("gamma", 1.05070102214813232421875);
            return One(Map(c.Input(0), x => x > 0 ? g * x : g * (a * Math.Exp(x) - a)));
        });
        r.Add("ThresholdedRelu", c =>
        {
            double a = c.Node.GetFloat("alpha", 1.0);
            return One(Map(c.Input(0), x => x > a ? x : 0));
        });
        r.Add("HardSigmoid", c =>
        {
            double a = c.Node.GetFloat("alpha", 0.2), b = c.Node.GetFloat("beta", 0.5);
            return One(Map(c.Input(0), x => Math.Clamp(a * x + b, 0, 1)));
        });
        r.Add("Swish", c =>
        {
            double alpha = c.Node.GetFloat("alpha", 1);
            return One(Map(c.Input(0), x => x / (1 + Math.Exp(-alpha * x))));
        }, since: 24);
        r.Add("HardSwish", c => One(Map(c.Input(0), x => x * Math.Clamp(x / 6 + 0.5, 0, 1))));
        r.Add("Softplus", c => One(Map(c.Input(0), x => x > 30 ? x : Math.Log(1 + Math.Exp(x)))));
        r.Add("Softsign", c => One(Map(c.Input(0), x => x / (1 + Math.Abs(x)))));
        r.Add("Mish", c => One(Map(c.Input(0), x => x * Math.Tanh(x > 30 ? x : Math.Log(1 + Math.Exp(x))))));
        r.Add("Shrink", c =>
        {
            double bias = c.Node.GetFloat("bias", 0), l = c.Node.GetFloat("lambd", 0.5);
            return One(Map(c.Input(0), x => x < -l ? x + bias : x > l ? x - bias : 0));
        });
        r.Add("Gelu", c =>
        {
            var approx = c.Node.GetString("approximate", "none");
            Func<double, double> f = approx switch
            {
                "none" => x => 0.5 * x * (1 + ElementwiseOps.Erf(x / Math.Sqrt(2))),
                "tanh" => x => 0.5 * x * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x))),
                _ => throw Unsupported(c, $"approximate='{approx}'"),
            };
            return One(Map(c.Input(0), f));
        });
        r.Add("PRelu", c =>
        {
            Tensor x = c.Input(0), slope = c.Input(1);
            return One(Map2(x, slope, (v, s) => v < 0 ? s * v : v, x.DType));
        });
        r.Add("Softmax", c => One(SoftmaxFamily(c, 0)));
        r.Add("LogSoftmax", c => One(SoftmaxFamily(c, 1)));
        r.Add("Hardmax", c => One(SoftmaxFamily(c, 2)));
    }

    static double Sigmoid(double x) => x >= 0 ? 1 / (1 + Math.Exp(-x)) : Math.Exp(x) / (1 + Math.Exp(x));

    /// <param name="kind">0 softmax, 1 log-softmax, 2 hardmax.</param>
    static Tensor SoftmaxFamily(OpContext c, int kind)
    {
        var x = c.Input(0);
        int rank = x.Dim;
        var shape = x.Shape;
        int axis = Axis(c, c.Node.GetInt("axis", c.Opset < 13 ? 1 : -1), rank);
        // Before opset 13 the input is coerced to 2-D [prod(dims < axis), prod(dims >= axis)].
        int outer, inner, stride;
        if (c.Opset < 13)
        {
            outer = shape.Take(axis).Aggregate(1, (p, d) => p * d);
            inner = shape.Skip(axis).Aggregate(1, (p, d) => p * d);
            stride = 1;
        }
        else
        {
            outer = shape.Take(axis).Aggregate(1, (p, d) => p * d);
            inner = rank == 0 ? 1 : shape[axis];
            stride = shape.Skip(axis + 1).Aggregate(1, (p, d) => p * d);
        }
        var v = x.ToDoubleArray();
        var o = new double[v.Length];
        for (int b = 0; b < outer; b++)
            for (int s = 0; s < stride; s++)
            {
                int baseIdx = b * inner * stride + s;
                double max = double.NegativeInfinity;
                int arg = 0;
                for (int i = 0; i < inner; i++)
                {
                    double e = v[baseIdx + i * stride];
                    if (e > max) { max = e; arg = i; }
                }
                if (kind == 2)
                {
                    for (int i = 0; i < inner; i++) o[baseIdx + i * stride] = i == arg ? 1 : 0;
                    continue;
                }
                double sum = 0;
                for (int i = 0; i < inner; i++) sum += Math.Exp(v[baseIdx + i * stride] - max);
                for (int i = 0; i < inner; i++)
                {
                    double d = v[baseIdx + i * stride] - max;
                    o[baseIdx + i * stride] = kind == 0 ? Math.Exp(d) / sum : d - Math.Log(sum);
                }
            }
        return FromDoubles(o, shape, x.DType);
    }
}
