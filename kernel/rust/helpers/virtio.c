// SPDX-License-Identifier: GPL-2.0

#include <linux/scatterlist.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>

/*
 * virtio_has_feature() BUG()s on a device-specific bit the driver did not
 * list in its feature table; asking about one is not a reason to crash
 * (such a bit is never negotiated, so the answer is false).
 */
bool rust_helper_virtio_has_feature(const struct virtio_device *vdev,
				    unsigned int fbit)
{
	if (fbit >= 64)
		return false;
	return __virtio_test_bit(vdev, fbit);
}

u32 rust_helper_virtio_config_generation(struct virtio_device *vdev)
{
	return vdev->config->generation ? vdev->config->generation(vdev) : 0;
}

void rust_helper_virtio_config_get(struct virtio_device *vdev,
				   unsigned int offset, void *buf,
				   unsigned int len)
{
	vdev->config->get(vdev, offset, buf, len);
}

int rust_helper_virtio_find_vqs(struct virtio_device *vdev, unsigned int nvqs,
				struct virtqueue *vqs[],
				struct virtqueue_info vqs_info[])
{
	return virtio_find_vqs(vdev, nvqs, vqs, vqs_info, NULL);
}

void rust_helper_virtio_del_vqs(struct virtio_device *vdev)
{
	vdev->config->del_vqs(vdev);
}

void rust_helper_virtio_device_ready(struct virtio_device *vdev)
{
	virtio_device_ready(vdev);
}

void rust_helper_sg_set_buf(struct scatterlist *sg, const void *buf,
			    unsigned int buflen)
{
	sg_set_buf(sg, buf, buflen);
}

void rust_helper_sg_mark_end(struct scatterlist *sg)
{
	sg_mark_end(sg);
}

void rust_helper_virtio_config_set(struct virtio_device *vdev,
				   unsigned int offset, const void *buf,
				   unsigned int len)
{
	vdev->config->set(vdev, offset, buf, len);
}

void rust_helper_virtio_synchronize_cbs(struct virtio_device *vdev)
{
	virtio_synchronize_cbs(vdev);
}

bool rust_helper_virtio_has_vqs(struct virtio_device *vdev)
{
	return !list_empty(&vdev->vqs);
}

bool rust_helper_virtio_driver_ok(struct virtio_device *vdev)
{
	return vdev->config->get_status(vdev) & VIRTIO_CONFIG_S_DRIVER_OK;
}

void rust_helper_virtio_clear_feature(struct virtio_device *vdev,
				      unsigned int fbit)
{
	if (fbit < 64)
		__virtio_clear_bit(vdev, fbit);
}
