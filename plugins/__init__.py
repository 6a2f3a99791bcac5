"""The production plugins built on devplugin_core: rdma_shared, sriov_net, rebel_npu."""
