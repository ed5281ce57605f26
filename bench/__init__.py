"""Benchmarks and checks that stand above the three packages: they may import any of them, and
nothing in contract, data_pipeline, training or evaluation imports them. Their results are
written to bench/results/.

render, shards      `make bench`: rendering and sharding throughput (data_pipeline)
model, train, resume, pipeline   `make bench`: the network, training steps, resume time, the
                    released-checkpoint load and the pipeline's sampling (training)
eval                `make bench`: sampling and metric throughput (evaluation)
learn               `make bench-learn`: every controller variant trained and compared
gpu_check, gpu_report, gpu_thresholds   `make gpu-check`: the GPU paths measured (render,
                    DeepSpeed, sampling), the report, the bars they must clear
parity, official*   `make parity`: our pipeline against the authors' released inference code
"""
