/*
 * The C side of dpdk-sys: DPDK's fast path (rx/tx burst, mbuf access) is
 * static inline and its structs change between releases, so Rust calls
 * these small functions instead of re-declaring DPDK's layouts. Every
 * struct Rust sees (ug_port_stats, ug_link) is defined here.
 */
#include <stdint.h>
#include <string.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_eth_ring.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_ring.h>

struct ug_link {
    uint32_t up;
    uint32_t speed_mbps;
};

struct ug_port_stats {
    uint64_t ipackets, opackets, ibytes, obytes;
    uint64_t imissed, ierrors, oerrors, rx_nombuf;
};

int ug_eal_init(int argc, char **argv) { return rte_eal_init(argc, argv); }

int ug_errno(void) { return rte_errno; }

const char *ug_strerror(int err) { return rte_strerror(err); }

void ug_thread_register(void) { rte_thread_register(); }

uint16_t ug_port_count(void) { return rte_eth_dev_count_avail(); }

struct rte_mempool *ug_pool_create(const char *name, unsigned n, int socket) {
    return rte_pktmbuf_pool_create(name, n, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE, socket);
}

int ug_port_socket(uint16_t port) { return rte_eth_dev_socket_id(port); }

/* Configures `port` with up to `*queues` RX and TX queue pairs fed from
 * `pool` (fewer when the device has fewer; `*queues` says how many), starts
 * it and writes its MAC address; 0 or a negative errno. */
int ug_port_start(uint16_t port, uint16_t *queues_inout, struct rte_mempool *pool, uint8_t mac[6]) {
    struct rte_eth_conf conf;
    struct rte_eth_dev_info info;
    struct rte_ether_addr addr;
    int rc, socket = rte_eth_dev_socket_id(port);
    uint16_t q, queues = *queues_inout, rxd = 1024, txd = 1024;

    if (!rte_eth_dev_is_valid_port(port))
        return -ENODEV;
    rc = rte_eth_dev_info_get(port, &info);
    if (rc != 0)
        return rc;
    if (queues > info.max_rx_queues)
        queues = info.max_rx_queues;
    if (queues > info.max_tx_queues)
        queues = info.max_tx_queues;
    if (queues == 0)
        queues = 1;
    *queues_inout = queues;
    memset(&conf, 0, sizeof(conf));
    if (queues > 1 && info.flow_type_rss_offloads != 0) {
        conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
        conf.rx_adv_conf.rss_conf.rss_hf =
            (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP) & info.flow_type_rss_offloads;
    }
    rc = rte_eth_dev_configure(port, queues, queues, &conf);
    if (rc != 0)
        return rc;
    rc = rte_eth_dev_adjust_nb_rx_tx_desc(port, &rxd, &txd);
    if (rc != 0)
        return rc;
    for (q = 0; q < queues; q++) {
        rc = rte_eth_rx_queue_setup(port, q, rxd, socket, NULL, pool);
        if (rc != 0)
            return rc;
        rc = rte_eth_tx_queue_setup(port, q, txd, socket, NULL);
        if (rc != 0)
            return rc;
    }
    rc = rte_eth_dev_start(port);
    if (rc != 0)
        return rc;
    rc = rte_eth_macaddr_get(port, &addr);
    if (rc != 0)
        return rc;
    memcpy(mac, addr.addr_bytes, 6);
    return 0;
}

int ug_port_stop(uint16_t port) { return rte_eth_dev_stop(port); }

uint16_t ug_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) {
    return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t ug_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) {
    return rte_eth_tx_burst(port, queue, pkts, n);
}

const uint8_t *ug_mbuf_data(const struct rte_mbuf *m, uint16_t *len) {
    *len = rte_pktmbuf_data_len(m);
    return rte_pktmbuf_mtod(m, const uint8_t *);
}

struct rte_mbuf *ug_mbuf_alloc(struct rte_mempool *pool) { return rte_pktmbuf_alloc(pool); }

uint8_t *ug_mbuf_append(struct rte_mbuf *m, uint16_t len) {
    return (uint8_t *)rte_pktmbuf_append(m, len);
}

void ug_mbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

int ug_link_get(uint16_t port, struct ug_link *out) {
    struct rte_eth_link link;
    int rc = rte_eth_link_get_nowait(port, &link);
    if (rc != 0)
        return rc;
    out->up = link.link_status == RTE_ETH_LINK_UP;
    out->speed_mbps = link.link_speed;
    return 0;
}

int ug_stats_get(uint16_t port, struct ug_port_stats *out) {
    struct rte_eth_stats s;
    int rc = rte_eth_stats_get(port, &s);
    if (rc != 0)
        return rc;
    out->ipackets = s.ipackets;
    out->opackets = s.opackets;
    out->ibytes = s.ibytes;
    out->obytes = s.obytes;
    out->imissed = s.imissed;
    out->ierrors = s.ierrors;
    out->oerrors = s.oerrors;
    out->rx_nombuf = s.rx_nombuf;
    return 0;
}

unsigned ug_pool_avail(const struct rte_mempool *pool) { return rte_mempool_avail_count(pool); }

unsigned ug_pool_in_use(const struct rte_mempool *pool) { return rte_mempool_in_use_count(pool); }

/* Two ports wired back to back through two rings (what one transmits the
 * other receives): a network without a kernel, for in-process tests and
 * benchmarks. Writes the ports' ids; 0 or -1. */
int ug_ring_pair(const char *name, uint16_t *a, uint16_t *b) {
    char n[64];
    struct rte_ring *ab, *ba;
    int pa, pb;

    snprintf(n, sizeof(n), "%s_ab", name);
    ab = rte_ring_create(n, 4096, (int)rte_socket_id(), RING_F_SP_ENQ | RING_F_SC_DEQ);
    snprintf(n, sizeof(n), "%s_ba", name);
    ba = rte_ring_create(n, 4096, (int)rte_socket_id(), RING_F_SP_ENQ | RING_F_SC_DEQ);
    if (ab == NULL || ba == NULL)
        return -1;
    snprintf(n, sizeof(n), "%s_a", name);
    pa = rte_eth_from_rings(n, &ba, 1, &ab, 1, (unsigned)rte_socket_id());
    snprintf(n, sizeof(n), "%s_b", name);
    pb = rte_eth_from_rings(n, &ab, 1, &ba, 1, (unsigned)rte_socket_id());
    if (pa < 0 || pb < 0)
        return -1;
    *a = (uint16_t)pa;
    *b = (uint16_t)pb;
    return 0;
}
