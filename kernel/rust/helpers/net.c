// SPDX-License-Identifier: GPL-2.0

#include <linux/etherdevice.h>
#include <linux/netdevice.h>
#include <linux/skbuff.h>
#include <linux/virtio_net.h>

void *rust_helper_netdev_priv(const struct net_device *dev)
{
	return netdev_priv(dev);
}

void rust_helper_netif_napi_add(struct net_device *dev,
				struct napi_struct *napi,
				int (*poll)(struct napi_struct *, int))
{
	netif_napi_add(dev, napi, poll);
}

void rust_helper_napi_schedule(struct napi_struct *napi)
{
	napi_schedule(napi);
}

void rust_helper_netif_stop_subqueue(struct net_device *dev, u16 queue)
{
	netif_stop_subqueue(dev, queue);
}

void rust_helper_netif_wake_subqueue(struct net_device *dev, u16 queue)
{
	netif_wake_subqueue(dev, queue);
}

bool rust_helper_netif_subqueue_stopped(const struct net_device *dev, u16 queue)
{
	return __netif_subqueue_stopped(dev, queue);
}

bool rust_helper_netif_carrier_ok(const struct net_device *dev)
{
	return netif_carrier_ok(dev);
}

void rust_helper_eth_hw_addr_set(struct net_device *dev, const u8 *addr)
{
	eth_hw_addr_set(dev, addr);
}

bool rust_helper_is_valid_ether_addr(const u8 *addr)
{
	return is_valid_ether_addr(addr);
}

void rust_helper_dev_kfree_skb_any(struct sk_buff *skb)
{
	dev_kfree_skb_any(skb);
}

void *rust_helper_skb_put_data(struct sk_buff *skb, const void *data,
			       unsigned int len)
{
	return skb_put_data(skb, data, len);
}

unsigned int rust_helper_skb_tailroom(const struct sk_buff *skb)
{
	return skb_tailroom(skb);
}

void rust_helper_skb_record_rx_queue(struct sk_buff *skb, u16 queue)
{
	skb_record_rx_queue(skb, queue);
}

u16 rust_helper_skb_get_queue_mapping(const struct sk_buff *skb)
{
	return skb_get_queue_mapping(skb);
}

int rust_helper_virtio_net_hdr_to_skb(struct sk_buff *skb,
				      const struct virtio_net_hdr *hdr)
{
	int err = virtio_net_hdr_to_skb(skb, hdr, true);

	if (!err && (hdr->flags & VIRTIO_NET_HDR_F_DATA_VALID))
		skb->ip_summed = CHECKSUM_UNNECESSARY;
	return err;
}

int rust_helper_virtio_net_hdr_from_skb(const struct sk_buff *skb,
					struct virtio_net_hdr *hdr)
{
	return virtio_net_hdr_from_skb(skb, hdr, true, false, 0);
}

void *rust_helper_skb_cb(struct sk_buff *skb)
{
	return skb->cb;
}

void rust_helper_skb_set_eth_protocol(struct sk_buff *skb,
				      struct net_device *dev)
{
	skb->protocol = eth_type_trans(skb, dev);
}

const u8 *rust_helper_sockaddr_data(const struct sockaddr *sa)
{
	return (const u8 *)sa->sa_data;
}

const char *rust_helper_netdev_parent_name(const struct net_device *dev)
{
	return dev->dev.parent ? dev_name(dev->dev.parent) : "";
}

void rust_helper_eth_hw_addr_random(struct net_device *dev)
{
	eth_hw_addr_random(dev);
}

bool rust_helper_netdev_xmit_more(void)
{
	return netdev_xmit_more();
}
